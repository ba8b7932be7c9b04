"""Managing invitations (list with expiry, resend, revoke), and an existing account made a member of another
hotel: it is a member at once, emailed "you were added" with a sign-in link, and needs no sign-up."""

from __future__ import annotations

import uuid

from tests.fixtures.events import event_tap
from tests.fixtures.people import PASSWORD, invite_and_join, make_admin, token_from_link
from tests.fixtures.platform import sign_in
from tests.notification.support import eventually


async def _invite(client, tap, admin, email: str, role: str = "staff") -> tuple[dict, str]:
    response = await client.post("/members/", json={"email": email, "role": role}, headers=admin.headers)
    assert response.status_code == 201, response.text
    invitation = response.json()
    onboarding = await tap.wait_for("roomee.notification.member.onboarding",
                                    lambda e: e["payload"]["onboardingId"] == invitation["id"])
    return invitation, token_from_link(onboarding["payload"]["signupLink"])


async def test_pending_invitations_are_listed_with_their_expiry_page_by_page(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        invited = [(await _invite(client, tap, admin, f"p{i}@example.com"))[0] for i in range(3)]
        seen, params = [], {"limit": 2}
        while True:
            page = await client.get("/members/invitations", params=params, headers=admin.headers)
            assert page.status_code == 200, page.text
            seen += page.json()["items"]
            if not page.json()["nextCursor"]:
                break
            params["cursor"] = page.json()["nextCursor"]
        assert [i["email"] for i in seen] == ["p0@example.com", "p1@example.com", "p2@example.com"]
        assert [i["id"] for i in seen] == [i["id"] for i in invited]
        assert all(i["expiresAt"] and i["expired"] is False and i["status"] == "pending" for i in seen)
        assert seen[0]["invitedByName"] and seen[0]["invitedByMemberId"] == admin.member_id

        # Accepted or revoked invitations are no longer pending.
        joined = await invite_and_join(client, tap, admin, "p1@example.com")
        assert joined.member_id
        revoked = await client.delete(f"/members/invitations/{invited[2]['id']}", headers=admin.headers)
        assert revoked.status_code == 204
        listed = (await client.get("/members/invitations", headers=admin.headers)).json()["items"]
        assert [i["email"] for i in listed] == ["p0@example.com"]

        # Bad input and permissions.
        assert (await client.get("/members/invitations", params={"cursor": "forged"},
                                 headers=admin.headers)).json()["error"] == "invalid_cursor"
        assert (await client.get("/members/invitations", params={"limit": 0}, headers=admin.headers)).status_code == 422
        staff = await client.get("/members/invitations", headers=joined.headers)
        assert staff.status_code == 403 and staff.json()["error"] == "permission_denied"
        assert (await client.get("/members/invitations")).status_code == 401


async def test_resend_gives_a_new_link_and_the_old_one_stops_working(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        invitation, old_token = await _invite(client, tap, admin, "late@example.com")
        resent = await client.post(f"/members/invitations/{invitation['id']}/resend", headers=admin.headers)
        assert resent.status_code == 201, resent.text
        assert resent.json()["id"] != invitation["id"] and resent.json()["email"] == "late@example.com"
        # A new email: a new onboarding event (its email channel) with a new link.
        again = await tap.wait_for("roomee.notification.member.onboarding",
                                   lambda e: e["payload"]["onboardingId"] == resent.json()["id"])
        assert "email" in again["channels"]
        new_token = token_from_link(again["payload"]["signupLink"])
        assert new_token != old_token

        old = await client.post("/users/signUp", json={"token": old_token, "password": PASSWORD})
        assert old.status_code == 410 and old.json()["error"] == "invitation_revoked", old.text
        # The old invitation is no longer pending: resending or revoking it again is a 404.
        assert (await client.post(f"/members/invitations/{invitation['id']}/resend",
                                  headers=admin.headers)).status_code == 404
        signed_up = await client.post("/users/signUp", json={"token": new_token, "password": PASSWORD})
        assert signed_up.status_code == 201, signed_up.text
        used = await client.post(f"/members/invitations/{resent.json()['id']}/resend", headers=admin.headers)
        assert used.status_code == 409 and used.json()["error"] == "invitation_used"
        assert (await client.delete(f"/members/invitations/{resent.json()['id']}",
                                    headers=admin.headers)).json()["error"] == "invitation_used"


async def test_revoke_ends_the_link_and_another_hotel_cannot_touch_an_invitation(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        admin = await make_admin(platform, client, "admin@example.com")
        stranger = await make_admin(platform, client, "other-admin@example.com", hotel_name="Other Hotel")
        invitation, token = await _invite(client, tap, admin, "maybe@example.com")
        path = f"/members/invitations/{invitation['id']}"

        # Another hotel's administrator: the invitation does not exist for them.
        assert (await client.get("/members/invitations", headers=stranger.headers)).json()["items"] == []
        assert (await client.post(f"{path}/resend", headers=stranger.headers)).status_code == 404
        assert (await client.delete(path, headers=stranger.headers)).status_code == 404
        # A staff member of the same workspace may not manage invitations.
        staff = await invite_and_join(client, tap, admin, "staff@example.com")
        assert (await client.delete(path, headers=staff.headers)).status_code == 403
        # An administrator's invitation needs an administrator.
        manager = await invite_and_join(client, tap, admin, "manager@example.com", role="manager")
        boss, _ = await _invite(client, tap, admin, "boss@example.com", role="admin")
        assert (await client.delete(f"/members/invitations/{boss['id']}", headers=manager.headers)).status_code == 403
        # Bad ids.
        assert (await client.delete("/members/invitations/not-a-uuid", headers=admin.headers)).status_code == 422
        assert (await client.post("/members/invitations/" + "x" * 300 + "/resend",
                                  headers=admin.headers)).status_code == 422
        assert (await client.delete(f"/members/invitations/{uuid.uuid4()}", headers=admin.headers)).status_code == 404

        assert (await client.delete(path, headers=manager.headers)).status_code == 204
        assert (await client.delete(path, headers=admin.headers)).status_code == 404
        refused = await client.post("/users/signUp", json={"token": token, "password": PASSWORD})
        assert refused.status_code == 410 and refused.json()["error"] == "invitation_revoked"


async def test_an_existing_user_added_to_a_second_hotel_signs_in_and_sees_both(platform):
    async with platform.client() as client, event_tap(platform) as tap:
        ada = await make_admin(platform, client, "ada@example.com", hotel_name="First Hotel")
        second_hotel = str(uuid.uuid4())
        added = await client.post("/members/add/hotel/member", headers=await platform.service_headers("hotel"), json={
            "hotelId": second_hotel, "hotelName": "Second Hotel", "email": "ADA@example.com", "firstName": "Ada",
            "lastName": "Admin", "dashboardAccess": True, "isAdmin": True, "locale": "en"})
        assert added.status_code == 201, added.text
        body = added.json()
        # The membership is made and bound to Ada's account: nothing to sign up.
        assert body["invitationToken"] is None and body["member"]["userId"] == ada.session["user"]["id"]
        told = await tap.wait_for("roomee.notification.member.added",
                                  lambda e: e["payload"]["member"]["id"] == body["member"]["id"])
        assert told["payload"]["hotelName"] == "Second Hotel" and "email" in told["channels"]
        assert told["metadata"]["receiverIds"] == [body["member"]["id"]]
        assert "/signin?email=ada%40example.com" in told["payload"]["signinLink"]

        # The email says "you were added", with the sign-in link, and is no invitation to create an account.
        mail = platform.settings.data_dir / "mail"

        async def emailed():
            return [p.read_text() for p in mail.glob("*.txt") if "Second Hotel" in p.read_text()]

        (text,) = await eventually(emailed)
        assert "Subject: You were added to Second Hotel on Roomee" in text and "To: ada@example.com" in text
        assert told["payload"]["signinLink"] in text and "Create your account" not in text

        session = await sign_in(client, "ada@example.com", PASSWORD)
        hotels = {m["ecosystemId"] for m in session["memberships"]}
        assert hotels == {ada.hotel_id, second_hotel}
        me = await client.get("/users/me", headers={"Authorization": f"Bearer {session['accessToken']}"})
        assert me.status_code == 200
        assert {m["ecosystemId"] for m in me.json()["memberships"]} == {ada.hotel_id, second_hotel}
        switched = await client.post("/users/switch-workspace", json={"workspaceId": body["workspace"]["id"]},
                                     headers={"Authorization": f"Bearer {session['accessToken']}"})
        assert switched.status_code == 200 and switched.json()["member"]["ecosystemId"] == second_hotel

        # Inviting an existing account to a workspace makes the membership at once too.
        other = await client.post("/members/", json={"email": "ada@example.com"},
                                  headers={"Authorization": f"Bearer {switched.json()['accessToken']}"})
        assert other.status_code == 409 and other.json()["error"] == "already_member"
