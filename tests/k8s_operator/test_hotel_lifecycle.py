"""Hotels through kubectl: apply → Ready → the platform has the tenant → columns → delete de-provisions."""

from __future__ import annotations

import json

from tests.fixtures.kube import CRD_DIR
from tests.fixtures.platform import make_settings, running_platform
from tests.hotel.support import FAST_SAGA

EXAMPLE = str(CRD_DIR / "examples" / "hotel.yaml")


async def test_apply_wait_ready_get_and_delete(tmp_path, kube, run_operator):
    settings = make_settings(tmp_path / "platform", **FAST_SAGA)
    async with running_platform(settings) as platform, run_operator(kube, settings):
        await kube.kubectl("apply", "--validate=false", "-f", EXAMPLE)
        await kube.kubectl("wait", "--for=condition=Ready", "hotel/grand-paris", "--timeout=60s")
        hotel = json.loads((await kube.kubectl("get", "hotel", "grand-paris", "-o", "json")).stdout)
        print(json.dumps(hotel["status"], indent=1))
        print((await kube.kubectl("get", "hotels")).stdout)
        print(kube.api.events_for("grand-paris"))
        print([(r.method, str(r.url.path)) for r in kube.api.requests if "event" in str(r.url.path)][:5])
        await kube.kubectl("delete", "hotel", "grand-paris", "--timeout=60s")
