"""The built-in pages of the links auth's emails carry, so that they work out of the box without a
front end: the sign-up page (``GET /signup?token=``, where invitation links point when
``ROOMEE_SIGNUP_URL`` is unset; first name, last name, password posted to ``POST /users/signUp``) and the
reset-password page (``GET /reset-password?token=``, when ``ROOMEE_RESET_PASSWORD_URL`` is unset; a new
password posted to ``POST /users/password/reset``). A few lines of inline script each; nothing external."""

from __future__ import annotations

import re
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import Response
from fastapi.responses import RedirectResponse

from roomee.kit.html import escape, html_page
from roomee.kit.settings import Settings

TOKEN = re.compile(r"^[A-Za-z0-9_-]{10,200}$")  # as SignUpRequest.token

_SCRIPT = """
document.getElementById('signup').addEventListener('submit', async function (event) {
  event.preventDefault();
  var form = event.target, status = document.getElementById('status');
  var body = {token: form.token.value, password: form.password.value};
  if (form.firstName.value.trim()) body.firstName = form.firstName.value.trim();
  if (form.lastName.value.trim()) body.lastName = form.lastName.value.trim();
  status.className = ''; status.textContent = 'Creating your account…';
  try {
    var answer = await fetch('users/signUp', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                              body: JSON.stringify(body)});
    var json = await answer.json().catch(function () { return {}; });
    if (answer.ok) {
      form.hidden = true; status.className = 'ok';
      status.textContent = 'Your account is ready. Open the Roomee app and sign in as ' + json.user.email + '.';
    } else {
      status.className = 'error';
      status.textContent = typeof json.detail === 'string' ? json.detail
        : 'Sign-up failed (' + (json.error || answer.status) + '): check the fields and try again.';
    }
  } catch (error) {
    status.className = 'error'; status.textContent = 'The platform could not be reached; try again.';
  }
});
"""


_RESET_SCRIPT = """
document.getElementById('reset').addEventListener('submit', async function (event) {
  event.preventDefault();
  var form = event.target, status = document.getElementById('status');
  if (form.password.value !== form.confirm.value) {
    status.className = 'error'; status.textContent = 'The two passwords differ.'; return;
  }
  status.className = ''; status.textContent = 'Saving your new password…';
  try {
    var answer = await fetch('users/password/reset', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({token: form.token.value, password: form.password.value})});
    if (answer.ok) {
      form.hidden = true; status.className = 'ok';
      status.textContent = 'Your password is changed and every device was signed out. Sign in again in the Roomee app.';
    } else {
      var json = await answer.json().catch(function () { return {}; });
      status.className = 'error';
      status.textContent = typeof json.detail === 'string' ? json.detail
        : 'The password was not changed (' + (json.error || answer.status) + ').';
    }
  } catch (error) {
    status.className = 'error'; status.textContent = 'The platform could not be reached; try again.';
  }
});
"""


def _front_end_or_invalid(configured_url: str | None, token: str | None, invalid_title: str,
                          invalid_body: str) -> Response | None:
    """A 307 to the front end's page when one is configured (links sent before it was set keep working, with
    their token), an HTML 404 for a malformed link, or None: serve the built-in page."""
    if configured_url:
        parts = urlsplit(configured_url)
        query = "&".join(filter(None, [parts.query, urlencode({"token": token or ""})]))
        return RedirectResponse(urlunsplit(parts._replace(query=query)), status_code=307)
    if not token or not TOKEN.match(token):
        return html_page(invalid_title, invalid_body, status_code=404)
    return None


def reset_password_answer(settings: Settings, token: str | None) -> Response:
    refused = _front_end_or_invalid(
        settings.reset_password_url, token, "Reset link not valid",
        "<h1>This reset link is not valid</h1><p>Open the link of your email again, whole, or ask for a new one "
        "from the sign-in screen.</p>")
    if refused is not None:
        return refused
    return html_page("Choose a new Roomee password", (
        "<h1>Choose a new password</h1><p>Every device signed in to your account will be signed out.</p>"
        '<form id="reset">'
        f'<input type="hidden" name="token" value="{escape(token)}">'
        '<label for="password">New password (at least 8 characters)</label>'
        '<input id="password" name="password" type="password" minlength="8" maxlength="256" required '
        'autocomplete="new-password">'
        '<label for="confirm">The same password again</label>'
        '<input id="confirm" name="confirm" type="password" minlength="8" maxlength="256" required '
        'autocomplete="new-password">'
        '<button type="submit">Change my password</button></form>'
        '<p id="status" role="status"></p>'
        "<noscript><p class=\"error\">This page needs JavaScript to send the form.</p></noscript>"
        f"<script>{_RESET_SCRIPT}</script>"
    ))


def signup_answer(settings: Settings, token: str | None) -> Response:
    refused = _front_end_or_invalid(
        settings.signup_url, token, "Invitation link not valid",
        "<h1>This invitation link is not valid</h1><p>Open the link of your invitation email again, whole, or ask "
        "your manager for a new invitation.</p>")
    if refused is not None:
        return refused
    return html_page("Create your Roomee account", (
        "<h1>Create your Roomee account</h1><p>You were invited to join your hotel's team.</p>"
        '<form id="signup">'
        f'<input type="hidden" name="token" value="{escape(token)}">'
        '<label for="firstName">First name</label>'
        '<input id="firstName" name="firstName" maxlength="100" autocomplete="given-name">'
        '<label for="lastName">Last name</label>'
        '<input id="lastName" name="lastName" maxlength="100" autocomplete="family-name">'
        '<label for="password">Password (at least 8 characters)</label>'
        '<input id="password" name="password" type="password" minlength="8" maxlength="256" required '
        'autocomplete="new-password">'
        '<button type="submit">Create my account</button></form>'
        '<p id="status" role="status"></p>'
        "<noscript><p class=\"error\">This page needs JavaScript to send the form.</p></noscript>"
        f"<script>{_SCRIPT}</script>"
    ))
