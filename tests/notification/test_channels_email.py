"""Email channel: file backend, SMTP through aiosmtpd, SendGrid through the SDK against a recording fake."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from roomee.kit.breaker import CircuitBreaker
from roomee.kit.settings import Settings
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
        self.over_tls: list[bool] = []  # per message: did it arrive on an encrypted connection
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
        # The transport, not session.ssl: aiosmtpd sets the latter only after STARTTLS.
        self.over_tls.append(server.transport.get_extra_info("ssl_object") is not None)
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
    server = _server_context(cert, key, tmp_path / "smtp")
    client = ssl.create_default_context(cafile=str(tmp_path / "smtp.crt"))
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


# -- SMTP: TLS modes, CA file, timeout -------------------------------------------------------------


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)


def _certificate_authority(directory: Path, name: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A throwaway root CA; its certificate is written to ``<directory>/<name>.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())  # EC: far quicker to generate than RSA
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def _server_tls_signed_by(
    directory: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> ssl.SSLContext:
    """A server TLS context whose certificate for 127.0.0.1 the given CA signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _server_context(cert, key, directory / "server")


def _server_context(cert, key, stem: Path) -> ssl.SSLContext:
    """A server TLS context from a certificate and key, written to ``stem``.crt/.key."""
    cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    # Purpose.CLIENT_AUTH (not PROTOCOL_TLS_SERVER): aiosmtpd's Controller also probes its own
    # port with this context as a client when it starts.
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server


@dataclass
class Pki:
    ca_file: Path  # the CA that signed the server's certificate
    stranger_ca_file: Path  # a CA that did not
    server_tls: ssl.SSLContext


@pytest.fixture
def pki(tmp_path) -> Pki:
    ca_file, ca_cert, ca_key = _certificate_authority(tmp_path, "roomee-test-ca")
    stranger_ca_file, _, _ = _certificate_authority(tmp_path, "stranger-ca")
    return Pki(ca_file, stranger_ca_file, _server_tls_signed_by(tmp_path, ca_cert, ca_key))


def smtp_settings(tmp_path, port: int, **overrides) -> Settings:
    return make_settings(
        tmp_path, email_backend="smtp", smtp_host="127.0.0.1", smtp_port=port, email_from=SENDER, **overrides
    )


def tls_server(handler: Recorder, pki: Pki, mode: str) -> smtp_server:
    """An aiosmtpd server speaking TLS from the first byte, or requiring STARTTLS."""
    if mode == "implicit":
        return smtp_server(handler, ssl_context=pki.server_tls)
    return smtp_server(handler, tls_context=pki.server_tls, require_starttls=True)


TLS_SETTING = {"implicit": "smtp_implicit_tls", "starttls": "smtp_starttls"}


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
async def test_smtp_tls_verified_with_the_configured_ca_file_delivers(tmp_path, pki, mode):
    handler = Recorder()
    with tls_server(handler, pki, mode) as server:
        settings = smtp_settings(tmp_path, server.port, smtp_ca_file=pki.ca_file, **{TLS_SETTING[mode]: True})
        backend = build_email(settings)
        assert isinstance(backend, SmtpEmail) and backend.implicit_tls is (mode == "implicit")
        results = await backend.send([mail(1), mail(2)])
    assert [r.status for r in results] == ["sent", "sent"]
    assert handler.over_tls == [True, True]
    assert handler.connections == (1 if mode == "implicit" else 2)  # one connection; STARTTLS says EHLO twice
    for (_, _, raw), expected in zip(handler.messages, [mail(1), mail(2)]):
        assert_multipart(parse(raw), expected)


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
async def test_smtp_certificate_from_another_ca_fails_retryable_and_nothing_is_sent(tmp_path, pki, mode):
    handler = Recorder()
    with tls_server(handler, pki, mode) as server:
        wrong_ca = smtp_settings(tmp_path, server.port, smtp_ca_file=pki.stranger_ca_file, **{TLS_SETTING[mode]: True})
        results = await build_email(wrong_ca).send([mail(1), mail(2)])
        # The kit retries failed, retryable attempts: once the CA is right, the same mail goes out.
        right_ca = smtp_settings(tmp_path, server.port, smtp_ca_file=pki.ca_file, **{TLS_SETTING[mode]: True})
        [retried] = await build_email(right_ca).send([mail(1)])
    assert [r.status for r in results] == ["failed", "failed"]
    assert all(r.retryable and "CERTIFICATE_VERIFY_FAILED" in r.error for r in results)
    assert retried.status == "sent" and len(handler.messages) == 1


async def test_smtp_tls_misconfiguration_is_a_start_up_error(tmp_path):
    with pytest.raises(ValueError, match="ROOMEE_SMTP_STARTTLS and ROOMEE_SMTP_IMPLICIT_TLS are exclusive"):
        build_email(smtp_settings(tmp_path, 465, smtp_starttls=True, smtp_implicit_tls=True))
    with pytest.raises(ValueError, match="exclusive"):
        SmtpEmail(host="127.0.0.1", port=465, sender=SENDER, starttls=True, implicit_tls=True)

    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(ValueError, match=r"ROOMEE_SMTP_CA_FILE=.*missing-ca\.pem") as raised:
        build_email(smtp_settings(tmp_path, 465, smtp_implicit_tls=True, smtp_ca_file=missing))
    assert isinstance(raised.value.__cause__, FileNotFoundError)
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="ROOMEE_SMTP_CA_FILE=.*not a readable PEM CA bundle"):
        build_email(smtp_settings(tmp_path, 465, smtp_starttls=True, smtp_ca_file=not_pem))


def test_tls_and_timeout_settings_defaults_and_environment(tmp_path, monkeypatch):
    for name in ("ROOMEE_PROVIDER_TIMEOUT_SECONDS", "ROOMEE_SMTP_IMPLICIT_TLS", "ROOMEE_SMTP_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    defaults = make_settings(tmp_path)
    assert (defaults.provider_timeout_seconds, defaults.smtp_implicit_tls, defaults.smtp_ca_file) == (10.0, False, None)
    monkeypatch.setenv("ROOMEE_PROVIDER_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("ROOMEE_SMTP_IMPLICIT_TLS", "true")
    monkeypatch.setenv("ROOMEE_SMTP_CA_FILE", str(tmp_path / "ca.pem"))
    configured = Settings()
    assert configured.provider_timeout_seconds == 2.5
    assert configured.smtp_implicit_tls is True and configured.smtp_ca_file == tmp_path / "ca.pem"


async def test_smtp_timeout_comes_from_the_provider_timeout_setting(tmp_path):
    # A listening socket that never accepts: the TCP handshake completes, the greeting never comes.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        backend = build_email(smtp_settings(tmp_path, silent.getsockname()[1], provider_timeout_seconds=0.2))
        assert backend.timeout == 0.2
        started = time.monotonic()
        [result] = await backend.send([mail(1)])
        elapsed = time.monotonic() - started
    assert result.status == "failed" and result.retryable and "cannot connect" in result.error
    assert elapsed < 1.0


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


async def test_sendgrid_timeout_comes_from_the_provider_timeout_setting(tmp_path):
    async with sendgrid_fake() as fake:
        fake.delay = 0.6
        settings = make_settings(
            tmp_path, email_backend="sendgrid", sendgrid_api_key="SG.k", sendgrid_url=fake.url,
            provider_timeout_seconds=0.2,
        )
        backend = build_email(settings)
        try:
            assert backend.client.client.timeout == 0.2
            started = time.monotonic()
            [slow] = await backend.send([mail(1)])
            elapsed = time.monotonic() - started
        finally:
            await backend.aclose()
    assert slow.status == "failed" and slow.retryable and "timed out" in slow.error
    assert elapsed < 0.5


async def test_sendgrid_needs_an_api_key(tmp_path):
    with pytest.raises(ValueError, match="ROOMEE_SENDGRID_API_KEY"):
        build_email(make_settings(tmp_path, email_backend="sendgrid"))
    backend = build_email(make_settings(tmp_path, email_backend="sendgrid", sendgrid_api_key="SG.k"))
    try:
        assert isinstance(backend, SendGridEmail) and backend.client.host == "https://api.sendgrid.com"
    finally:
        await backend.aclose()
