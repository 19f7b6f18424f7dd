"""The shop's load for Locust, against the gateway's public API.

    locust -f loadtests/locustfile.py                          # web UI; host and key found
    locust -f loadtests/locustfile.py --headless -u 10 -r 2 -t 1m
    LOAD_MODE=open LOAD_USER_RATE=5 locust -f loadtests/locustfile.py --headless -u 4 -t 1m
    LOAD_SHAPE=spike LOAD_USERS=5 LOAD_SPIKE_USERS=20 locust -f loadtests/locustfile.py --headless

``LOAD_MODE`` ``closed`` (default: ``ShopUser``, waits for each answer) or ``open``
(``ArrivalUser``, a constant arrival rate); ``LOAD_SHAPE`` ``steady|step|spike|soak``
(loadtests/shapes.py) or unset for Locust's own ``-u/-r/-t``. Only the chosen user class and
shape are in this module's namespace: Locust runs every one it finds here.

The API key is ``MESH_API_KEY``, else the first of ``GATEWAY_API_KEYS``, else the one
``meshctl status --json`` shows. The host is ``--host``, else ``MESH_GATEWAY_URL``, else the
gateway URL ``meshctl status --json`` shows.
``LOAD_SAMPLES=<path>`` writes per-second samples (loadtests/samples.py), ``LOAD_ORDERS=<path>``
one line per accepted order. The rest of the settings: loadtests/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from locust import events
from locust.env import Environment

from loadtests import samples, shapes, shop

MODE = os.environ.get("LOAD_MODE", "").strip().lower() or "closed"
if MODE == "open":
    ArrivalUser = shop.ArrivalUser
elif MODE == "closed":
    ShopUser = shop.ShopUser
else:
    raise SystemExit(f"loadtests: LOAD_MODE must be closed or open, got {MODE!r}")

# Under one name only (Locust would run it once per name); None, without LOAD_SHAPE, is no shape.
LoadShape = shapes.chosen(os.environ)


def platform_gateway() -> dict[str, Any]:
    """``gateway`` of ``meshctl status --json`` (url, api_key); empty when not running."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "infra.meshctl", "status", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        gateway = json.loads(done.stdout).get("gateway")
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError):
        return {}
    return gateway if isinstance(gateway, dict) else {}


def api_key_from_env() -> str:
    key = os.environ.get("MESH_API_KEY", "").strip()
    if key:
        return key
    return os.environ.get("GATEWAY_API_KEYS", "").split(",")[0].strip()


@events.init.add_listener
def on_init(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    key = api_key_from_env()
    if not environment.host and os.environ.get("MESH_GATEWAY_URL"):
        environment.host = os.environ["MESH_GATEWAY_URL"]  # what the compose stack sets
    # A worker gets the host from its master with the first spawn.
    needs_host = not environment.host and not (options is not None and options.worker)
    gateway = platform_gateway() if not key or needs_host else {}
    key = key or str(gateway.get("api_key") or "")
    if not key:
        raise SystemExit(
            "loadtests: no API key: set MESH_API_KEY (or GATEWAY_API_KEYS), "
            "or start the platform (make up) so that `meshctl status --json` has one"
        )
    if not environment.host and gateway.get("url"):
        environment.host = str(gateway["url"])
    if not environment.host and options is not None and options.headless:
        raise SystemExit("loadtests: no host: pass --host, or start the platform (make up)")

    state = shop.configure(shop.LoadSettings.from_env(os.environ, key))
    environment.events.quitting.add_listener(lambda **_: state.close())
    if os.environ.get("LOAD_SAMPLES"):
        samples.attach(environment, os.environ["LOAD_SAMPLES"])
