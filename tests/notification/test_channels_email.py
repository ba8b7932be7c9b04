"""Email channel: file backend, SMTP through aiosmtpd, SendGrid through the SDK against a recording fake."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import logging
import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from roomee.kit.breaker import CircuitBreaker
from roomee.notification.channels import EmailMessage, build_email
from roomee.notification.channels.email import FileEmail, SendGridEmail, SmtpEmail
from tests.fixtures.fakes import sendgrid_fake
from tests.fixtures.platform import free_port, make_settings

SENDER = "Roomee <no-reply@roomee.test>"


def mail(n: int = 1, *, to: str | None = None) -> EmailMessage:
    return EmailMessage(
        notification_id=f"notif-{n}",
        member_id=f"member-{n}",
        to=to or f"staff{n}@hotel.test",
        subject=f"Invitation à rejoindre Hôtel du Lac #{n}",
        text=f"Bonjour,\nRejoignez l'équipe : https://roomee.test/signup?token=t{n}\n",
        html=f"<p>Bonjour,</p><p><a href=\"https://roomee.test/signup?token=t{n}\">Rejoindre</a></p>",
    )


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def assert_multipart(parsed: email.message.EmailMessage, expected: EmailMessage) -> None:
    assert parsed["Subject"] == expected.subject
    assert parsed["To"] == expected.to
    assert parsed["From"] == SENDER
    assert parsed["X-Roomee-Notification-Id"] == expected.notification_id
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    # SMTP carries CRLF line ends; the file backend keeps LF.
    assert parts[0].get_content().replace("\r\n", "\n") == expected.text
    assert parts[1].get_content().strip() == expected.html


# -- file ---------------------------------------------------------------------------------------


async def test_file_backend_writes_one_eml_per_message_and_logs(tmp_path, caplog):
    backend = FileEmail(tmp_path / "mail", sender=SENDER)
    messages = [mail(1), mail(2)]
    with caplog.at_level(logging.INFO, logger="roomee.notification.email"):
        results = await backend.send(messages)
    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 2 and [r.status for r in results] == ["sent", "sent"]
    by_id = {parse(f.read_bytes())["X-Roomee-Notification-Id"]: parse(f.read_bytes()) for f in files}
    for message in messages:
        assert_multipart(by_id[message.notification_id], message)
    assert {r.response for r in results} == {str(f) for f in files}
    assert [r.recipients for r in results] == [["staff1@hotel.test"], ["staff2@hotel.test"]]
    assert sum("staff1@hotel.test" in record.getMessage() for record in caplog.records) == 1
    assert await backend.send([]) == []


async def test_file_backend_is_the_default_under_the_data_dir(tmp_path):
    backend = build_email(make_settings(tmp_path, email_from=SENDER))
    assert isinstance(backend, FileEmail) and backend.directory == tmp_path / "mail"
    await backend.send([mail()])
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1


# -- SMTP ---------------------------------------------------------------------------------------


class Recorder:
    """aiosmtpd handler: keeps messages, counts connections, refuses some recipients."""

    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.connections = 0
        self.refuse = refuse or {}

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted for delivery"


class smtp_server:
    def __init__(self, handler: Recorder, **kwargs) -> None:
        self.port = free_port()
        self.controller = Controller(handler, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> "smtp_server":
        self.controller.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.controller.stop()


async def test_smtp_sends_multipart_text_and_html_over_one_connection():
    handler = Recorder()
    with smtp_server(handler) as server:
        backend = SmtpEmail(host="127.0.0.1", port=server.port, sender=SENDER)
        messages = [mail(1), mail(2), mail(3)]
        results = await backend.send(messages)
    assert [r.status for r in results] == ["sent"] * 3
    assert handler.connections == 1
    assert len(handler.messages) == 3
    for (mail_from, rcpt_tos, raw), expected in zip(handler.messages, messages):
        assert mail_from == "no-reply@roomee.test" and rcpt_tos == [expected.to]
        assert_multipart(parse(raw), expected)
    assert all(r.provider == "smtp" and r.channel == "email" and r.provider_message_id for r in results)


async def test_smtp_refused_recipient_fails_only_that_message():
    handler = Recorder(refuse={"gone@hotel.test": "550 5.1.1 mailbox unavailable", "full@hotel.test": "452 4.2.2 over quota"})
    with smtp_server(handler) as server:
        backend = SmtpEmail(host="127.0.0.1", port=server.port, sender=SENDER)
        results = await backend.send([mail(1), mail(2, to="gone@hotel.test"), mail(3, to="full@hotel.test"), mail(4)])
    assert [r.status for r in results] == ["sent", "failed", "failed", "sent"]
    assert results[1].retryable is False and "550" in results[1].error
    assert results[2].retryable is True and "452" in results[2].error
    assert handler.connections == 1 and len(handler.messages) == 2


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtp_login_with_configured_credentials(tmp_path):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"roomee", b"s3cret")
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself

    handler = Recorder()
    with smtp_server(handler, authenticator=authenticator, auth_require_tls=False, auth_required=True) as server:
        settings = make_settings(
            tmp_path, email_backend="smtp", smtp_host="127.0.0.1", smtp_port=server.port,
            smtp_username="roomee", smtp_password="s3cret", email_from=SENDER,
        )
        backend = build_email(settings)
        assert isinstance(backend, SmtpEmail)
        [ok] = await backend.send([mail(1)])
        wrong = SmtpEmail(host="127.0.0.1", port=server.port, sender=SENDER, username="roomee", password="nope")
        [denied] = await wrong.send([mail(2)])
    assert ok.status == "sent" and len(handler.messages) == 1
    assert denied.status == "failed" and denied.retryable and "535" in denied.error


def _self_signed(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server TLS context for 127.0.0.1 and a client context that trusts it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


async def test_smtp_starttls_then_login(tmp_path):
    server_tls, client_tls = _self_signed(tmp_path)
    seen = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        seen.append(session.ssl is not None)
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"roomee", b"s3cret"), handled=False)

    handler = Recorder()
    with smtp_server(handler, tls_context=server_tls, require_starttls=True, authenticator=authenticator,
                     auth_required=True) as server:
        backend = SmtpEmail(host="127.0.0.1", port=server.port, sender=SENDER, username="roomee", password="s3cret",
                            starttls=True, tls_context=client_tls)
        results = await backend.send([mail(1), mail(2)])
        ehlos = handler.connections
        plain = SmtpEmail(host="127.0.0.1", port=server.port, sender=SENDER, starttls=False)
        [refused] = await plain.send([mail(3)])
    assert [r.status for r in results] == ["sent", "sent"]
    assert seen == [True] and ehlos == 2  # one connection: EHLO, STARTTLS, EHLO again, one login
    assert len(handler.messages) == 2
    assert refused.status == "failed" and "530" in refused.error  # the server requires STARTTLS


async def test_smtp_unreachable_fails_the_whole_batch_retryable():
    backend = SmtpEmail(host="127.0.0.1", port=free_port(), sender=SENDER, timeout=2)
    results = await backend.send([mail(1), mail(2)])
    assert [r.status for r in results] == ["failed", "failed"]
    assert all(r.retryable and "cannot connect" in r.error for r in results)


# -- SendGrid -----------------------------------------------------------------------------------


async def test_sendgrid_posts_the_sdk_body_for_each_message():
    async with sendgrid_fake() as fake:
        backend = SendGridEmail(api_key="SG.test-key", sender=SENDER, url=fake.url)
        try:
            messages = [mail(1), mail(2)]
            results = await backend.send(messages)
        finally:
            await backend.aclose()
    assert [r.status for r in results] == ["sent", "sent"]
    assert [r.recipients for r in results] == [["staff1@hotel.test"], ["staff2@hotel.test"]]
    assert len(fake.requests) == 2
    bodies = {r.json["personalizations"][0]["to"][0]["email"]: r for r in fake.requests}
    for expected in messages:
        request = bodies[expected.to]
        assert (request.method, request.path) == ("POST", "/v3/mail/send")
        assert request.header("authorization") == "Bearer SG.test-key"
        assert request.header("user-agent").startswith("sendgrid/")
        body = request.json
        assert body["from"] == {"email": "no-reply@roomee.test", "name": "Roomee"}
        assert body["subject"] == expected.subject
        assert body["personalizations"] == [{"to": [{"email": expected.to}]}]
        assert body["content"] == [
            {"type": "text/plain", "value": expected.text},
            {"type": "text/html", "value": expected.html},
        ]
        assert body["custom_args"] == {"notification_id": expected.notification_id}


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (401, False)])
async def test_sendgrid_errors_carry_the_retry_hint(status, retryable):
    async with sendgrid_fake() as fake:
        fake.fail_next(1, status=status, body={"errors": [{"message": "nope"}]})
        backend = SendGridEmail(api_key="SG.k", sender=SENDER, url=fake.url)
        try:
            [failed] = await backend.send([mail(1)])
            [sent] = await backend.send([mail(1)])
        finally:
            await backend.aclose()
    assert failed.status == "failed" and failed.retryable is retryable
    assert failed.error == f"HTTP {status}" and "nope" in failed.response
    assert sent.status == "sent"


async def test_sendgrid_unreachable_and_open_circuit_are_retryable():
    breaker = CircuitBreaker("notification", "sendgrid-test", volume_threshold=2, reset_timeout_ms=60_000)
    backend = SendGridEmail(api_key="SG.k", sender=SENDER, url=f"http://127.0.0.1:{free_port()}", breaker=breaker)
    try:
        results = await backend.send([mail(1), mail(2)])
        [blocked] = await backend.send([mail(3)])
    finally:
        await backend.aclose()
    assert all(r.status == "failed" and r.retryable and r.error.startswith("connection error") for r in results)
    assert blocked.retryable and blocked.error.startswith("circuit open")


async def test_sendgrid_needs_an_api_key(tmp_path):
    with pytest.raises(ValueError, match="ROOMEE_SENDGRID_API_KEY"):
        build_email(make_settings(tmp_path, email_backend="sendgrid"))
    backend = build_email(make_settings(tmp_path, email_backend="sendgrid", sendgrid_api_key="SG.k"))
    try:
        assert isinstance(backend, SendGridEmail) and backend.client.host == "https://api.sendgrid.com"
    finally:
        await backend.aclose()
