"""``meshctl traffic [SERVICE]`` and ``meshctl faults set|clear|show``: the Consul KV keys
the gateway and the services follow."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from infra.meshctl.output import CommandError, print_table
from infra.meshctl.rollout import duration, fraction
from infra.runtime import Runtime
from infra.runtime.models import check_version
from services.common.faults import FaultSettings


def _services(runtime: Runtime, wanted: str | None) -> list[str]:
    state = runtime.status()
    if state.gateway is None:
        raise CommandError("the platform is not running (make up)")
    names = [s.name for s in state.services]
    if wanted is None:
        return names
    if wanted not in names:
        raise CommandError(f"unknown service {wanted!r} (known: {', '.join(names)})")
    return [wanted]


def traffic(runtime: Runtime, service: str | None) -> int:
    rows = []
    replicas = runtime.replicas()
    for name in _services(runtime, service):
        weights = runtime.weights(name)
        per_version: dict[str, list[str]] = {}
        for r in replicas:
            if r.service == name and r.state == "ready":
                per_version.setdefault(r.version, []).append(r.address)
        shown = " ".join(f"{v}={w}" for v, w in sorted(weights.items())) if weights else "-"
        instances = "; ".join(
            f"{v}: {len(addrs)} ({', '.join(addrs)})" for v, addrs in sorted(per_version.items())
        )
        rows.append((name, shown, instances or "none ready"))
    print_table(("SERVICE", "WEIGHTS", "READY INSTANCES BY VERSION"), rows)
    print("no weights: the gateway spreads requests over every ready instance")
    return 0


def parse_faults(pairs: list[str]) -> FaultSettings:
    values: dict[str, float] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().lower().replace("-", "_")
        try:
            if not sep:
                raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {pair!r}")
            if key in ("latency", "latency_ms"):
                values["latency_ms"] = float(raw) if key == "latency_ms" else duration(raw) * 1000
            elif key == "error_rate":
                values["error_rate"] = fraction(raw)
            else:
                raise argparse.ArgumentTypeError(
                    f"unknown fault {key!r}: use latency=200ms and/or error_rate=0.2"
                )
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
    if not values:
        raise CommandError("nothing to set: give latency=200ms and/or error_rate=0.2")
    try:
        return FaultSettings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CommandError(f"{first['loc'][0]}: {first['msg']}") from None


def split_target(target: str) -> tuple[str, str | None]:
    """``orders`` or ``orders@v2`` -> (service, version or None)."""
    service, _, version = target.partition("@")
    if version:
        try:
            check_version(version)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    return service, version or None


def faults(runtime: Runtime, action: str, target: str | None, pairs: list[str]) -> int:
    service, version = split_target(target) if target else (None, None)
    scope = f"@{version}" if version else ""
    if action == "set":
        if service is None:
            raise CommandError(
                "usage: meshctl faults set SERVICE[@VERSION] latency=200ms error_rate=0.2"
            )
        settings = parse_faults(pairs)
        name = _services(runtime, service)[0]
        runtime.set_faults(name, settings, version)
        who = f"every {version} replica" if version else "every replica"
        print(
            f"{name}{scope}: latency {settings.latency_ms:g}ms, error rate "
            f"{settings.error_rate:.0%} ({who} applies it within a second)"
        )
        return 0
    if action == "clear":
        if service is None:
            raise CommandError("usage: meshctl faults clear SERVICE[@VERSION]")
        name = _services(runtime, service)[0]
        runtime.set_faults(name, None, version)
        print(f"{name}{scope}: no faults")
        return 0
    rows = []
    versions_of = {s.name: sorted(s.versions) for s in runtime.status().services}
    for name in _services(runtime, service):
        wanted = [version] if version else [None, *versions_of.get(name, [])]
        for each in wanted:
            current = runtime.faults(name, each)
            if each is not None and current is None and not version:
                continue  # a version without faults of its own: the service row says it
            rows.append(
                (
                    name + (f"@{each}" if each else ""),
                    f"{current.latency_ms:g}ms" if current else "-",
                    f"{current.error_rate:.0%}" if current else "-",
                )
            )
    print_table(("SERVICE", "LATENCY", "ERROR RATE"), rows)
    return 0
