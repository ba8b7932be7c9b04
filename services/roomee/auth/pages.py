"""The built-in sign-up page (``GET /signup?token=``): where invitation links point when
``ROOMEE_SIGNUP_URL`` is unset, so that an invitation works out of the box. A form (first name, last
name, password) posted to ``POST /users/signUp`` by a few lines of inline script; nothing external."""

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


def signup_answer(settings: Settings, token: str | None) -> Response:
    if settings.signup_url:  # a link sent before the front end's page was configured
        parts = urlsplit(settings.signup_url)
        query = "&".join(filter(None, [parts.query, urlencode({"token": token or ""})]))
        return RedirectResponse(urlunsplit(parts._replace(query=query)), status_code=307)
    if not token or not TOKEN.match(token):
        return html_page("Invitation link not valid", "<h1>This invitation link is not valid</h1><p>Open the "
                         "link of your invitation email again, whole, or ask your manager for a new invitation.</p>",
                         status_code=404)
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
