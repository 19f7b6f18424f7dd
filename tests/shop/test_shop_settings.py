"""A bad value of a service's own setting stops it at start-up with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys

from shop_support import ROOT

BAD = {
    "orders": ("ORDERS_IDEMPOTENCY_TTL", "tomorrow"),
    "inventory": ("INVENTORY_INITIAL_STOCK", "-5"),
    "payments": ("PAYMENTS_FAILURE_RATE", "1.5"),
    "notifications": ("NOTIFICATIONS_FEED_MAXLEN", "ten"),
}


def test_a_bad_setting_stops_the_service_with_one_line_naming_it() -> None:
    running = {
        service: subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            env={**os.environ, variable: value, "CONSUL_HTTP_ADDR": ""},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for service, (variable, value) in BAD.items()
    }
    for service, process in running.items():
        out, err = process.communicate(timeout=30)
        variable, value = BAD[service]
        assert process.returncode == 2, (service, out, err)
        [line] = err.strip().splitlines()
        assert line.startswith(f"config error: {variable}:"), line
        assert value in line
