"""A bad value of a service's own setting stops it at start-up with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from shop_support import ROOT

from services.common.settings import load_settings
from services.inventory.settings import InventorySettings

# service, variable, value, what the line names (the part of the value that is wrong)
BAD = [
    ("orders", "ORDERS_IDEMPOTENCY_TTL", "tomorrow", "ORDERS_IDEMPOTENCY_TTL: "),
    ("inventory", "INVENTORY_INITIAL_STOCK", "-5", "INVENTORY_INITIAL_STOCK: "),
    ("inventory", "INVENTORY_RESTOCK", "sometimes", 'expected "off" or "<level> every'),
    ("payments", "PAYMENTS_FAILURE_RATE", "1.5", "PAYMENTS_FAILURE_RATE: "),
    ("notifications", "NOTIFICATIONS_FEED_MAXLEN", "ten", "NOTIFICATIONS_FEED_MAXLEN: "),
]


def test_a_bad_setting_stops_the_service_with_one_line_naming_it() -> None:
    running = [
        subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            env={**os.environ, variable: value, "CONSUL_HTTP_ADDR": ""},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for service, variable, value, _ in BAD
    ]
    for (service, variable, value, named), process in zip(BAD, running, strict=True):
        out, err = process.communicate(timeout=30)
        assert process.returncode == 2, (service, out, err)
        [line] = err.strip().splitlines()
        assert line.startswith(f"config error: {variable}"), line
        assert named in line and value in line, line


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("0 every 30s", "INVENTORY_RESTOCK.level: input should be greater than or equal to 1"),
        ("1000 every 0s", "INVENTORY_RESTOCK.every: input should be greater than 0"),
        ("1000 every soon", "INVENTORY_RESTOCK.every: expected seconds or a duration"),
        ("", 'INVENTORY_RESTOCK: expected "off" or "<level> every <interval>"'),
    ],
)
def test_a_bad_restock_policy_is_one_line_naming_what_is_wrong(
    value: str, named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same load_settings the process calls (above, once, for a policy that does not parse).
    monkeypatch.setenv("INVENTORY_RESTOCK", value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(InventorySettings)
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"config error: {named}"), line
