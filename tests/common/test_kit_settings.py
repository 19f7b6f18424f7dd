"""Settings: environment only, validated at start-up, one clear line on a bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest
from kit_support import ROOT, SAMPLE

from services.common.consul import go_duration
from services.common.settings import ServiceSettings, load_settings


def test_bad_port_stops_the_process_with_one_line_naming_it() -> None:
    result = subprocess.run(
        [sys.executable, str(SAMPLE)],
        env={"PATH": "/usr/bin:/bin", "PORT": "abc", "SERVICE_NAME": "sample"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error: PORT: input should be a valid integer")
    assert "got 'abc'" in lines[0]


def test_values_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_NAME", "orders")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:8500")
    monkeypatch.setenv("CHECK_INTERVAL", "250ms")
    monkeypatch.setenv("DEREGISTER_CRITICAL_AFTER", "1m")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("ADMIN_TOKEN", "")
    settings = load_settings(ServiceSettings)
    assert settings.CONSUL_HTTP_ADDR == "http://127.0.0.1:8500"
    assert settings.CHECK_INTERVAL == 0.25
    assert go_duration(settings.DEREGISTER_CRITICAL_AFTER) == "60000ms"
    assert settings.LOG_LEVEL == "DEBUG"
    assert settings.ADMIN_TOKEN is None
    assert settings.KAFKA_ENABLE_IDEMPOTENCE is False
    assert settings.instance_id == "orders-127.0.0.1-8000"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAFKA_ACKS", "2"),
        ("CONSUL_HTTP_ADDR", "http://nohost"),
        ("CHECK_INTERVAL", "soon"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
    ],
)
def test_each_bad_value_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv("SERVICE_NAME", "orders")
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        load_settings(ServiceSettings)
    assert exited.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"config error: {name}: ")
    assert "\n" not in line


def test_a_secret_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERVICE_NAME", "orders")
    monkeypatch.setenv("PORT", "0")
    monkeypatch.setenv("ADMIN_TOKEN", "s3cret")
    with pytest.raises(SystemExit):
        load_settings(ServiceSettings)
    assert "s3cret" not in capsys.readouterr().err
