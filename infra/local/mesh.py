"""What the supervisor asks of the mesh: Consul (checks, KV, deregistration) and the gateway
(its view of the instances, its metrics, pinned smoke requests)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import aiohttp
import consul.aio

from gateway.discovery import TRAFFIC_PREFIX
from services.common.consul import consul_client

log = logging.getLogger(__name__)

PASSING = "passing"


@dataclass(frozen=True)
class Checks:
    """Consul's verdict on every registered instance, at one instant."""

    passing: set[str]  # service IDs whose check passes
    healthy: dict[str, int]  # service name -> passing instances


class Mesh:
    def __init__(self, consul_addr: str, gateway_url: str, admin_token: str, api_key: str) -> None:
        self.consul_addr = consul_addr
        self.gateway_url = gateway_url
        self._admin = {"Authorization": f"Bearer {admin_token}"}
        self._api_key = api_key
        self._consul: consul.aio.Consul | None = None
        self._http: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._consul = consul_client(self.consul_addr)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def close(self) -> None:
        if self._consul is not None:
            await self._consul.close()
        if self._http is not None:
            await self._http.close()

    @property
    def consul(self) -> consul.aio.Consul:
        assert self._consul is not None, "Mesh.open() first"
        return self._consul

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "Mesh.open() first"
        return self._http

    # -- Consul ------------------------------------------------------------------------------
    async def checks(self) -> Checks:
        checks = await self.consul.agent.checks()
        passing: set[str] = set()
        healthy: dict[str, int] = {}
        for check in (checks or {}).values():
            service_id = check.get("ServiceID")
            if not service_id or check.get("Status") != PASSING:
                continue
            passing.add(service_id)
            name = check.get("ServiceName", "")
            healthy[name] = healthy.get(name, 0) + 1
        return Checks(passing, healthy)

    async def forget(self, service_id: str) -> None:
        """Deregister an instance that died without doing it (SIGKILL, crash)."""
        try:
            await self.consul.agent.service.deregister(service_id)
        except Exception as exc:  # already gone, or Consul busy: its check reaps it anyway
            log.debug("deregister %s: %s", service_id, exc)

    async def set_weights(self, service: str, weights: dict[str, int] | None) -> None:
        key = TRAFFIC_PREFIX + service
        if weights is None:
            await self.consul.kv.delete(key)
        else:
            await self.consul.kv.put(key, json.dumps(weights, sort_keys=True))

    # -- the gateway -------------------------------------------------------------------------
    async def gateway_sees(self, service: str) -> set[str]:
        """IDs of the instances of ``service`` the gateway routes to right now."""
        async with self.http.get(f"{self.gateway_url}/admin/instances", headers=self._admin) as r:
            r.raise_for_status()
            pools = await r.json()
        return {i["id"] for i in pools.get(service, {}).get("instances", [])}

    async def gateway_metrics(self) -> str:
        async with self.http.get(f"{self.gateway_url}/metrics") as response:
            response.raise_for_status()
            return await response.text()

    async def smoke(self, path: str, version: str) -> str | None:
        """One GET pinned to ``version`` through the gateway; ``None`` when it went well,
        else what went wrong."""
        headers = {"X-API-Key": self._api_key, "X-Mesh-Version": version}
        try:
            async with self.http.get(self.gateway_url + path, headers=headers) as response:
                served = response.headers.get("X-Mesh-Upstream-Version")
                if response.status >= 500:
                    return f"GET {path} answered {response.status}"
                if served != version:
                    return f"GET {path} was served by {served}, not {version}"
                return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"GET {path} failed: {exc!r}"

    async def scrape(self, address: str) -> str:
        async with self.http.get(f"http://{address}/metrics") as response:
            response.raise_for_status()
            return await response.text()
