"""Consul's JSON shapes (field names and casing as a real agent answers them)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from .durations import format_duration
from .state import Check, KVEntry, NodeInfo, Registry, Service

# The Consul version whose answers these shapes follow; reported by /v1/agent/self.
CONSUL_VERSION = "1.20.1"


def _duration_or_empty(nanos: int) -> str:
    return format_duration(nanos) if nanos > 0 else ""


def _proxy() -> dict[str, Any]:
    return {"Mode": "", "MeshGateway": {}, "Expose": {}}


def tagged_node_addresses(node: NodeInfo) -> dict[str, str]:
    return {
        "lan": node.address,
        "lan_ipv4": node.address,
        "wan": node.address,
        "wan_ipv4": node.address,
    }


def node_meta() -> dict[str, str]:
    return {"consul-network-segment": "", "consul-version": CONSUL_VERSION}


def node_json(registry: Registry) -> dict[str, Any]:
    node = registry.node
    return {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": tagged_node_addresses(node),
        "Meta": node_meta(),
        "CreateIndex": registry.nodes_index(),
        "ModifyIndex": registry.nodes_index(),
    }


def service_json(service: Service) -> dict[str, Any]:
    """A ``NodeService``, as in the ``Service`` field of /v1/health/service answers."""
    data: dict[str, Any] = {
        "ID": service.id,
        "Service": service.name,
        "Tags": list(service.tags),
        "Address": service.address,
        "Meta": dict(service.meta),
        "Port": service.port,
        "Weights": dict(service.weights),
        "EnableTagOverride": service.enable_tag_override,
        "Proxy": _proxy(),
        "Connect": {},
        "PeerName": "",
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }
    if service.tagged_addresses:
        data["TaggedAddresses"] = service.tagged_addresses
    return data


def agent_service_json(service: Service, datacenter: str) -> dict[str, Any]:
    """An ``AgentService``, as /v1/agent/services lists them."""
    data: dict[str, Any] = {
        "ID": service.id,
        "Service": service.name,
        "Tags": list(service.tags),
        "Meta": dict(service.meta),
        "Port": service.port,
        "Address": service.address,
        "Weights": dict(service.weights),
        "EnableTagOverride": service.enable_tag_override,
        "Datacenter": datacenter,
    }
    if service.tagged_addresses:
        data["TaggedAddresses"] = service.tagged_addresses
    return data


def content_hash(data: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def _definition_json(check: Check) -> dict[str, Any]:
    definition = check.definition
    if definition is None:
        return {}
    return {
        "HTTP": definition.http,
        "Header": definition.header or None,
        "Method": definition.method,
        "Body": definition.body,
        "TLSSkipVerify": definition.tls_skip_verify,
        "TCP": definition.tcp,
        "Interval": format_duration(definition.interval_ns),
        "Timeout": format_duration(definition.timeout_ns),
        "DeregisterCriticalServiceAfter": format_duration(definition.deregister_after_ns),
    }


def check_json(check: Check, node: NodeInfo) -> dict[str, Any]:
    """A ``HealthCheck``, as the health and agent endpoints answer them."""
    definition = check.definition
    return {
        "Node": node.name,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": list(check.service_tags),
        "Type": check.kind,
        "Interval": _duration_or_empty(definition.interval_ns if definition else 0),
        "Timeout": _duration_or_empty(definition.timeout_ns if definition else 0),
        "ExposedPort": 0,
        "Definition": _definition_json(check),
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
    }


def catalog_service_json(service: Service, registry: Registry) -> dict[str, Any]:
    """A ``ServiceNode``, as /v1/catalog/service/<name> lists them."""
    node = registry.node
    data: dict[str, Any] = {
        "ID": node.node_id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": tagged_node_addresses(node),
        "NodeMeta": node_meta(),
        "ServiceKind": "",
        "ServiceID": service.id,
        "ServiceName": service.name,
        "ServiceTags": list(service.tags),
        "ServiceAddress": service.address,
        "ServiceWeights": dict(service.weights),
        "ServiceMeta": dict(service.meta),
        "ServicePort": service.port,
        "ServiceSocketPath": "",
        "ServiceEnableTagOverride": service.enable_tag_override,
        "ServiceProxy": _proxy(),
        "ServiceConnect": {},
        "ServicePeerName": "",
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }
    if service.tagged_addresses:
        data["ServiceTaggedAddresses"] = service.tagged_addresses
    return data


def kv_json(entry: KVEntry) -> dict[str, Any]:
    value = base64.b64encode(entry.value).decode("ascii") if entry.value else None
    return {
        "LockIndex": entry.lock_index,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": value,
        "CreateIndex": entry.create_index,
        "ModifyIndex": entry.modify_index,
    }


def member_json(registry: Registry) -> dict[str, Any]:
    node = registry.node
    return {
        "Name": node.name,
        "Addr": node.address,
        "Port": 8301,
        "Tags": {
            "build": f"{CONSUL_VERSION}:devregistry",
            "dc": node.datacenter,
            "id": node.node_id,
            "port": "8300",
            "role": "consul",
            "vsn": "2",
        },
        "Status": 1,
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }


def agent_self_json(registry: Registry) -> dict[str, Any]:
    node = registry.node
    return {
        "Config": {
            "Datacenter": node.datacenter,
            "PrimaryDatacenter": node.datacenter,
            "NodeName": node.name,
            "NodeID": node.node_id,
            "Revision": "devregistry",
            "Server": True,
            "Version": CONSUL_VERSION,
            # Tells tools (meshctl status) that this is the development registry.
            "VersionMetadata": "devregistry",
        },
        "Member": member_json(registry),
        "Meta": node_meta(),
        "Stats": {"consul": {"leader": "true", "server": "true", "known_datacenters": "1"}},
    }
