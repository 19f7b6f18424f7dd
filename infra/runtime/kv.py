"""Traffic weights and fault settings in Consul KV: the same keys on every runtime.

The gateway follows ``mesh/traffic/<service>`` and every service ``mesh/faults/<service>``
with blocking queries, so writing a key is all it takes to shift traffic or inject a fault.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import consul

from gateway.discovery import TRAFFIC_PREFIX, WeightsError, parse_weights
from services.common.faults import FaultSettings, faults_key


class KVError(RuntimeError):
    """Consul could not be read or written; the message is one line for the user."""


class MeshKV:
    """Synchronous reads and writes of the mesh keys (for ``meshctl`` and drills)."""

    def __init__(self, consul_addr: str, timeout: float = 5.0) -> None:
        parts = urlsplit(consul_addr if "://" in consul_addr else f"http://{consul_addr}")
        self.addr = consul_addr
        self._client = consul.Consul(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 8500,
            scheme=parts.scheme or "http",
            connections_timeout=timeout,
        )

    def _get(self, key: str) -> bytes | None:
        try:
            _, entry = self._client.kv.get(key)
        except Exception as exc:
            raise KVError(f"consul at {self.addr} did not answer: {exc}") from None
        return entry["Value"] if entry else None

    def _put(self, key: str, document: dict[str, Any]) -> None:
        try:
            self._client.kv.put(key, json.dumps(document, sort_keys=True))
        except Exception as exc:
            raise KVError(f"consul at {self.addr} did not answer: {exc}") from None

    def _delete(self, key: str) -> None:
        try:
            self._client.kv.delete(key)
        except Exception as exc:
            raise KVError(f"consul at {self.addr} did not answer: {exc}") from None

    def weights(self, service: str) -> dict[str, int] | None:
        try:
            return parse_weights(self._get(TRAFFIC_PREFIX + service))
        except WeightsError as exc:
            raise KVError(f"{TRAFFIC_PREFIX}{service} is malformed: {exc}") from None

    def set_weights(self, service: str, weights: dict[str, int] | None) -> None:
        """Write the weights (validated as the gateway would); ``None`` removes the key."""
        if weights is None:
            self._delete(TRAFFIC_PREFIX + service)
            return
        try:
            parse_weights(json.dumps(weights))
        except WeightsError as exc:
            raise KVError(f"weights for {service}: {exc}") from None
        self._put(TRAFFIC_PREFIX + service, weights)

    def seed_weights(self, service: str, weights: dict[str, int]) -> bool:
        """Write the weights only where the key does not exist yet (``cas=0``); False when it
        did: weights someone set (a rollout's step, an operator) are never overwritten."""
        try:
            parse_weights(json.dumps(weights))
        except WeightsError as exc:
            raise KVError(f"weights for {service}: {exc}") from None
        try:
            written = self._client.kv.put(
                TRAFFIC_PREFIX + service, json.dumps(weights, sort_keys=True), cas=0
            )
        except Exception as exc:
            raise KVError(f"consul at {self.addr} did not answer: {exc}") from None
        return bool(written)

    def faults(self, service: str, version: str | None = None) -> FaultSettings | None:
        raw = self._get(faults_key(service, version))
        if not raw:
            return None
        return FaultSettings.model_validate_json(raw)

    def set_faults(
        self, service: str, faults: FaultSettings | None, version: str | None = None
    ) -> None:
        """Faults of the whole service, or of one version's instances (``version``)."""
        key = faults_key(service, version)
        if faults is None or not faults.active:
            self._delete(key)
            return
        self._put(key, faults.model_dump())

    def passing(self, service: str) -> list[dict[str, Any]]:
        """Passing instances of ``service`` as Consul's health endpoint returns them."""
        try:
            _, nodes = self._client.health.service(service, passing=True)
        except Exception as exc:
            raise KVError(f"consul at {self.addr} did not answer: {exc}") from None
        return list(nodes or [])
