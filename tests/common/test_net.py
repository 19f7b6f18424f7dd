"""Addresses in URLs: an IPv6 pod address gets its brackets (the Consul check URL, the Host
header the gateway sends), an IPv4 address or a name does not."""

from __future__ import annotations

from pydantic import SecretStr

from services.common.consul import ConsulRegistration
from services.common.net import host_port
from services.common.settings import ServiceSettings


def test_host_port_brackets_ipv6_only() -> None:
    assert host_port("10.244.1.7", 8080) == "10.244.1.7:8080"
    assert host_port("fd00:10:244::7", 8080) == "[fd00:10:244::7]:8080"
    assert host_port("[fd00::7]", 8080) == "[fd00::7]:8080"
    assert host_port("orders", 80) == "orders:80"


def test_the_consul_check_of_an_ipv6_pod_is_a_valid_url() -> None:
    settings = ServiceSettings(
        SERVICE_NAME="orders",
        PORT=8080,
        ADVERTISE_ADDRESS="fd00:10:244::7",
        ADMIN_TOKEN=SecretStr("t"),
    )
    check = ConsulRegistration(None, settings).definition()["check"]  # type: ignore[arg-type]
    assert check["http"] == "http://[fd00:10:244::7]:8080/readyz"
