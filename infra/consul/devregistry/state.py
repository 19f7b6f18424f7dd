"""The registry's data: one node, its services and checks, the KV store, and their indexes.

Like a Consul server, every write takes the next value of one Raft-like index and records
it as the ``ModifyIndex`` of what it touched. Blocking queries read *per-resource* indexes
(one service name, one key or prefix), so a watcher wakes on any write but only answers
once the thing it watches has moved; see ``blocking.py``.

All methods are synchronous and run on the event loop thread, so no locking is needed;
``changed()`` hands out an ``asyncio.Event`` that the next write sets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import logs
from .definitions import CRITICAL, PASSING, CheckDefinition, ServiceDefinition

SERF_CHECK_ID = "serfHealth"
CONSUL_SERVICE = "consul"


@dataclass(frozen=True)
class NodeInfo:
    name: str
    node_id: str
    address: str
    datacenter: str = "dc1"


@dataclass
class Service:
    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    weights: dict[str, int]
    enable_tag_override: bool
    tagged_addresses: dict[str, dict[str, Any]]
    # False for the catalog-only ``consul`` service that the agent endpoints do not list.
    agent_local: bool = True
    create_index: int = 0
    modify_index: int = 0

    def catalog_view(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.tags,
            self.address,
            self.port,
            self.meta,
            self.weights,
            self.enable_tag_override,
            self.tagged_addresses,
        )


@dataclass
class Check:
    check_id: str
    name: str
    status: str
    notes: str
    output: str
    service_id: str
    service_name: str
    service_tags: list[str]
    # None for the node's serfHealth check, which nothing runs.
    definition: CheckDefinition | None
    create_index: int = 0
    modify_index: int = 0
    # Monotonic time the check turned critical; drives DeregisterCriticalServiceAfter.
    critical_since: float | None = None

    @property
    def kind(self) -> str:
        return self.definition.kind if self.definition is not None else ""

    def catalog_view(self) -> tuple[Any, ...]:
        definition = self.definition
        return (
            self.name,
            self.status,
            self.notes,
            self.service_id,
            self.service_name,
            self.service_tags,
            self.kind,
            definition.interval_ns if definition else 0,
            definition.timeout_ns if definition else 0,
        )


@dataclass
class KVEntry:
    key: str
    value: bytes | None
    flags: int
    create_index: int
    modify_index: int
    lock_index: int = 0


class CheckListener(Protocol):
    """Told when a check object starts or stops being live, to run or stop its probe."""

    def check_added(self, check: Check) -> None: ...

    def check_removed(self, check: Check) -> None: ...


class UnknownServiceError(LookupError):
    pass


class UnknownCheckError(LookupError):
    pass


def default_check_id(service_id: str, position: int, count: int) -> str:
    """``service:<id>`` for a lone check, ``service:<id>:<n>`` (1-based) for several."""
    return f"service:{service_id}" if count == 1 else f"service:{service_id}:{position}"


@dataclass
class _Indexes:
    nodes: int = 0
    services: int = 0
    checks: int = 0
    kv: int = 0
    service_names: dict[str, int] = field(default_factory=dict)


class Registry:
    def __init__(self, node: NodeInfo, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self._clock = clock
        self._index = 0
        self._idx = _Indexes()
        self._changed = asyncio.Event()
        self._listener: CheckListener | None = None
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Check] = {}
        self.kv: dict[str, KVEntry] = {}
        self._kv_tombstones: dict[str, int] = {}
        self.closing = False
        self._bootstrap()

    # -- indexes and change notification -------------------------------------------------

    @property
    def index(self) -> int:
        """The latest index handed out by any write."""
        return self._index

    def changed(self) -> asyncio.Event:
        """An event the next write (or ``close``) sets. Take it *before* reading the data."""
        return self._changed

    def _next_index(self) -> int:
        self._index += 1
        return self._index

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def close(self) -> None:
        """Release every blocked query (they answer with what they have)."""
        self.closing = True
        self._notify()

    def set_listener(self, listener: CheckListener | None) -> None:
        self._listener = listener

    def _bootstrap(self) -> None:
        # A dev agent is a server whose catalog already holds its node, its serfHealth
        # check and the ``consul`` service.
        index = self._next_index()
        self._idx.nodes = index
        consul = Service(
            id=CONSUL_SERVICE,
            name=CONSUL_SERVICE,
            tags=[],
            address="",
            port=8300,
            meta={"raft_version": "3", "serf_protocol_current": "2", "serf_protocol_max": "5"},
            weights={"Passing": 1, "Warning": 1},
            enable_tag_override=False,
            tagged_addresses={},
            agent_local=False,
            create_index=index,
            modify_index=index,
        )
        serf = Check(
            check_id=SERF_CHECK_ID,
            name="Serf Health Status",
            status=PASSING,
            notes="",
            output="Agent alive and reachable",
            service_id="",
            service_name="",
            service_tags=[],
            definition=None,
            create_index=index,
            modify_index=index,
        )
        self.services[consul.id] = consul
        self.checks[serf.check_id] = serf
        self._idx.services = self._idx.checks = index
        self._idx.service_names[CONSUL_SERVICE] = index

    # -- index reads used by blocking queries ----------------------------------------------

    def catalog_index(self) -> int:
        return max(self._idx.nodes, self._idx.services, self._idx.checks, 1)

    def services_index(self) -> int:
        return max(self._idx.services, 1)

    def checks_index(self) -> int:
        return max(self._idx.checks, 1)

    def nodes_index(self) -> int:
        return max(self._idx.nodes, 1)

    def service_exists(self, name: str) -> bool:
        return any(service.name == name for service in self.services.values())

    def service_index(self, name: str) -> int:
        """Moves when an instance of ``name`` or one of its checks changes.

        For a service that has no instance, Consul answers with the catalog's table index.
        """
        if self.service_exists(name):
            return self._idx.service_names.get(name, self.catalog_index())
        return self.catalog_index()

    def kv_table_index(self) -> int:
        return max(self._idx.kv, 1)

    def kv_key_index(self, key: str) -> int:
        entry = self.kv.get(key)
        return entry.modify_index if entry is not None else self.kv_table_index()

    def kv_prefix_index(self, prefix: str) -> int:
        """Highest ModifyIndex under ``prefix``, deletions included (the table's if none)."""
        if not prefix:
            return self.kv_table_index()
        highest = 0
        for key, entry in self.kv.items():
            if key.startswith(prefix):
                highest = max(highest, entry.modify_index)
        for key, index in self._kv_tombstones.items():
            if key.startswith(prefix):
                highest = max(highest, index)
        return highest or self.kv_table_index()

    def _touch_service_names(self, names: Iterable[str], index: int) -> None:
        for name in names:
            self._idx.service_names[name] = index

    # -- services and checks -------------------------------------------------------------

    def agent_services(self) -> list[Service]:
        return sorted(
            (service for service in self.services.values() if service.agent_local),
            key=lambda service: service.id,
        )

    def agent_checks(self) -> list[Check]:
        return sorted(
            (check for check in self.checks.values() if check.definition is not None),
            key=lambda check: check.check_id,
        )

    def service_instances(self, name: str) -> list[Service]:
        # One node, so Consul's (Node, ServiceID) order is ServiceID order.
        return sorted(
            (service for service in self.services.values() if service.name == name),
            key=lambda service: service.id,
        )

    def checks_of_service(self, service_id: str) -> list[Check]:
        return [check for check in self.checks.values() if check.service_id == service_id]

    def node_checks(self) -> list[Check]:
        return [check for check in self.checks.values() if not check.service_id]

    def register_service(
        self, definition: ServiceDefinition, *, replace_existing_checks: bool = False
    ) -> Service:
        """Add or replace a service and its checks; answer the live service."""
        old = self.services.get(definition.id)
        service = Service(
            id=definition.id,
            name=definition.name,
            tags=list(definition.tags),
            address=definition.address,
            port=definition.port,
            meta=dict(definition.meta),
            weights=dict(definition.weights),
            enable_tag_override=definition.enable_tag_override,
            tagged_addresses=dict(definition.tagged_addresses),
        )
        count = len(definition.checks)
        new_checks = [
            self._new_check(
                check_def,
                check_def.check_id or default_check_id(service.id, position, count),
                owner=service,
            )
            for position, check_def in enumerate(definition.checks, start=1)
        ]
        new_ids = {check.check_id for check in new_checks}
        old_checks = self.checks_of_service(service.id) if old is not None else []
        left_over = [check for check in old_checks if check.check_id not in new_ids]
        # Without ?replace-existing-checks, checks the new definition does not mention stay.
        dropped = left_over if replace_existing_checks else []
        kept = [] if replace_existing_checks else left_over
        replaced = {cid: self.checks[cid] for cid in new_ids if cid in self.checks}

        service_changed = old is None or old.catalog_view() != service.catalog_view()
        changed_ids = {
            check.check_id
            for check in new_checks
            if check.check_id not in replaced
            or replaced[check.check_id].catalog_view() != check.catalog_view()
        }
        kept_changed = service_changed and bool(kept)
        checks_changed = bool(changed_ids) or bool(dropped) or kept_changed
        anything_changed = service_changed or checks_changed
        index = self._next_index() if anything_changed else 0

        if old is not None and not service_changed:
            service.create_index, service.modify_index = old.create_index, old.modify_index
        else:
            service.create_index = old.create_index if old is not None else index
            service.modify_index = index
        for check in new_checks:
            previous = replaced.get(check.check_id)
            check.create_index = previous.create_index if previous is not None else index
            if previous is not None and check.check_id not in changed_ids:
                check.modify_index = previous.modify_index
            else:
                check.modify_index = index
        for check in kept:
            check.service_name, check.service_tags = service.name, list(service.tags)
            if service_changed:
                check.modify_index = index

        self.services[service.id] = service
        for check in dropped:
            self._drop_check(check)
        for check in new_checks:
            previous = self.checks.get(check.check_id)
            if previous is not None:
                self._drop_check(previous)
            self.checks[check.check_id] = check
            if self._listener is not None:
                self._listener.check_added(check)

        if anything_changed:
            if service_changed:
                self._idx.services = index
            if checks_changed:
                self._idx.checks = index
            # The old name (a rename) and owners of check IDs taken over move too.
            names = {service.name} | ({old.name} if old is not None else set())
            names |= {check.service_name for check in replaced.values() if check.service_name}
            self._touch_service_names(names, index)
            self._notify()
        logs.event(
            "service registered",
            level=logging.INFO if anything_changed else logging.DEBUG,
            service_id=service.id,
            service_name=service.name,
            checks=[check.check_id for check in new_checks],
            changed=anything_changed,
        )
        return service

    def _new_check(
        self, definition: CheckDefinition, check_id: str, *, owner: Service | None
    ) -> Check:
        status = definition.status or CRITICAL  # Consul starts checks critical
        output = ""
        critical_since = self._clock() if status == CRITICAL else None
        previous = self.checks.get(check_id)
        if previous is not None:
            # Re-registering keeps the live status, so a restart does not flap the service.
            status, output, critical_since = (
                previous.status,
                previous.output,
                previous.critical_since,
            )
        default_name = f"Service '{owner.name}' check" if owner is not None else check_id
        return Check(
            check_id=check_id,
            name=definition.name or default_name,
            status=status,
            notes=definition.notes,
            output=output,
            service_id=owner.id if owner is not None else "",
            service_name=owner.name if owner is not None else "",
            service_tags=list(owner.tags) if owner is not None else [],
            definition=definition,
            critical_since=critical_since,
        )

    def _drop_check(self, check: Check) -> None:
        if self.checks.get(check.check_id) is check:
            del self.checks[check.check_id]
        if self._listener is not None:
            self._listener.check_removed(check)

    def deregister_service(self, service_id: str, *, reason: str = "api") -> None:
        service = self.services.get(service_id)
        if service is None or not service.agent_local:
            raise UnknownServiceError(service_id)
        del self.services[service_id]
        for check in self.checks_of_service(service_id):
            self._drop_check(check)
        index = self._next_index()
        self._idx.services = self._idx.checks = index
        self._touch_service_names([service.name], index)
        self._notify()
        logs.event(
            "service deregistered",
            service_id=service_id,
            service_name=service.name,
            reason=reason,
        )

    def register_check(self, definition: CheckDefinition) -> Check:
        """``PUT /v1/agent/check/register``: a node check, or one more check of a service."""
        service: Service | None = None
        if definition.service_id:
            service = self.services.get(definition.service_id)
            if service is None or not service.agent_local:
                raise UnknownServiceError(definition.service_id)
        check_id = definition.check_id or definition.name
        if check_id == SERF_CHECK_ID:
            raise UnknownCheckError(check_id)
        check = self._new_check(definition, check_id, owner=service)
        index = self._next_index()
        previous = self.checks.get(check_id)
        check.create_index = previous.create_index if previous is not None else index
        check.modify_index = index
        if previous is not None:
            self._drop_check(previous)
        self.checks[check_id] = check
        if self._listener is not None:
            self._listener.check_added(check)
        self._idx.checks = index
        names = {check.service_name} if check.service_name else set()
        if previous is not None and previous.service_name:
            names.add(previous.service_name)
        self._touch_service_names(names, index)
        self._notify()
        return check

    def deregister_check(self, check_id: str) -> None:
        check = self.checks.get(check_id)
        if check is None or check.definition is None:
            raise UnknownCheckError(check_id)
        self._drop_check(check)
        index = self._next_index()
        self._idx.checks = index
        if check.service_name:
            self._touch_service_names([check.service_name], index)
        self._notify()

    def update_check(self, check: Check, status: str, output: str) -> bool:
        """Record a probe result; answer whether the status changed.

        Only a status change takes an index and wakes watchers: Consul syncs output-only
        changes lazily, so watchers never see them as changes either.
        """
        if self.checks.get(check.check_id) is not check:
            return False  # a stale probe of a check that was replaced or removed
        check.output = output
        if status == check.status:
            return False
        previous, check.status = check.status, status
        if status == CRITICAL:
            check.critical_since = self._clock()
        else:
            check.critical_since = None
        index = self._next_index()
        check.modify_index = index
        self._idx.checks = index
        if check.service_name:
            self._touch_service_names([check.service_name], index)
        self._notify()
        logs.event(
            "check status changed",
            check_id=check.check_id,
            service_id=check.service_id,
            previous=previous,
            status=status,
            output=output[:200],
        )
        return True

    def services_to_reap(self) -> list[str]:
        """Services with a check critical for longer than its DeregisterCriticalServiceAfter."""
        now = self._clock()
        due: list[str] = []
        for check in self.checks.values():
            definition = check.definition
            if (
                definition is None
                or definition.deregister_after_ns <= 0
                or not check.service_id
                or check.status != CRITICAL
                or check.critical_since is None
            ):
                continue
            critical_for = now - check.critical_since
            if critical_for > definition.deregister_after_ns / 1e9 and check.service_id not in due:
                due.append(check.service_id)
        return due

    # -- KV --------------------------------------------------------------------------------

    def kv_get(self, key: str) -> KVEntry | None:
        return self.kv.get(key)

    def kv_list(self, prefix: str) -> list[KVEntry]:
        return [self.kv[key] for key in sorted(self.kv) if key.startswith(prefix)]

    def kv_keys(self, prefix: str, separator: str = "") -> list[str]:
        keys: list[str] = []
        for key in sorted(self.kv):
            if not key.startswith(prefix):
                continue
            if separator:
                # Roll everything below the next separator up into one "directory" key.
                cut = key.find(separator, len(prefix))
                if cut >= 0:
                    key = key[: cut + len(separator)]
            if not keys or keys[-1] != key:
                keys.append(key)
        return keys

    def kv_put(
        self, key: str, value: bytes | None, *, flags: int = 0, cas: int | None = None
    ) -> bool:
        existing = self.kv.get(key)
        if cas is not None:
            # cas=0: create only; cas=N: update only the entry whose ModifyIndex is N.
            if existing is None and cas != 0:
                return False
            if existing is not None and existing.modify_index != cas:
                return False
        index = self._next_index()
        self.kv[key] = KVEntry(
            key=key,
            value=value,
            flags=flags,
            create_index=existing.create_index if existing is not None else index,
            modify_index=index,
            lock_index=existing.lock_index if existing is not None else 0,
        )
        self._kv_tombstones.pop(key, None)
        self._idx.kv = index
        self._notify()
        return True

    def kv_delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        if cas is not None:
            existing = self.kv.get(key)
            if existing is None:
                return True  # as Consul: nothing to delete counts as success
            if existing.modify_index != cas:
                return False
            doomed = [key]
        elif recurse:
            doomed = [k for k in self.kv if k.startswith(key)]
        else:
            doomed = [key] if key in self.kv else []
        # Consul writes a Raft entry for every delete, even of nothing.
        index = self._next_index()
        for doomed_key in doomed:
            del self.kv[doomed_key]
            self._kv_tombstones[doomed_key] = index
        self._idx.kv = index
        self._notify()
        return True
