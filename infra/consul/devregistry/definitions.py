"""Service and check definitions decoded from JSON payloads, validated like a Consul agent.

Consul matches field names case-insensitively and also accepts snake_case aliases, so
``{"ID": ...}``, ``{"id": ...}`` (what py-consul sends) and ``{"deregister_critical_service_after":
...}`` all mean the same thing. Field names are normalised here; the keys *inside* user maps
(``Meta``, ``Header``, ``TaggedAddresses``) are data and are kept exactly as sent.
Error messages reuse Consul's wording so clients that match on them keep working.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .durations import SECOND, DurationError, duration_from_json

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
STATUSES = (PASSING, WARNING, CRITICAL)

DEFAULT_CHECK_TIMEOUT_NS = 10 * SECOND

_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
_META_MAX_PAIRS = 64
_META_KEY_MAX = 128
_META_VALUE_MAX = 512
_META_RESERVED_PREFIX = "consul-"

# Check kinds Consul has and this registry does not run; registering one is refused rather
# than silently accepted as a check that would never change status.
_UNSUPPORTED_CHECK_FIELDS = {
    "script": "Script",
    "args": "Script",
    "scriptargs": "Script",
    "grpc": "GRPC",
    "dockercontainerid": "Docker",
    "h2ping": "H2PING",
    "udp": "UDP",
    "osservice": "OSService",
    "aliasnode": "Alias",
    "aliasservice": "Alias",
}


class PayloadError(ValueError):
    """The payload is unusable; the message is the plain-text body of a 400 answer."""


def normalise_key(key: str) -> str:
    """``DeregisterCriticalServiceAfter``, ``deregister_critical_service_after`` -> one key."""
    return key.replace("_", "").replace("-", "").lower()


def normalise_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {normalise_key(str(key)): value for key, value in raw.items()}


def _decode_error(detail: str) -> PayloadError:
    return PayloadError(f"Request decode failed: {detail}")


def _string(fields: Mapping[str, Any], key: str, label: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _decode_error(f"{label} must be a string")
    return value


def _bool(fields: Mapping[str, Any], key: str, label: str) -> bool:
    value = fields.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _decode_error(f"{label} must be a boolean")
    return value


def _int(fields: Mapping[str, Any], key: str, label: str, *, low: int, high: int) -> int:
    value = fields.get(key)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _decode_error(f"{label} must be an integer")
    if not low <= value <= high:
        raise _decode_error(f"{label} out of range: {value}")
    return value


def _duration(fields: Mapping[str, Any], key: str, label: str) -> int:
    value = fields.get(key)
    if value is None or value == "":
        return 0
    try:
        return duration_from_json(value)
    except DurationError as exc:
        raise _decode_error(f"{label}: {exc}") from None


def _string_list(fields: Mapping[str, Any], key: str, label: str) -> list[str]:
    value = fields.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _decode_error(f"{label} must be a list of strings")
    return list(value)


def _string_map(fields: Mapping[str, Any], key: str, label: str) -> dict[str, str]:
    value = fields.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _decode_error(f"{label} must be an object of strings")
    return {str(k): v for k, v in value.items()}


def _header(fields: Mapping[str, Any]) -> dict[str, list[str]]:
    value = fields.get("header")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _decode_error("Header must be an object of string lists")
    header: dict[str, list[str]] = {}
    for name, values in value.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _decode_error("Header must be an object of string lists")
        header[str(name)] = list(values)
    return header


@dataclass(frozen=True)
class CheckDefinition:
    """One health check as registered; durations are integer nanoseconds (0 = unset)."""

    check_id: str = ""
    name: str = ""
    notes: str = ""
    status: str = ""
    service_id: str = ""
    http: str = ""
    method: str = ""
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""
    tls_skip_verify: bool = False
    disable_redirects: bool = False
    tcp: str = ""
    ttl_ns: int = 0
    interval_ns: int = 0
    timeout_ns: int = 0
    deregister_after_ns: int = 0
    success_before_passing: int = 0
    failures_before_critical: int = 0
    failures_before_warning: int = 0

    @property
    def kind(self) -> str:
        if self.http:
            return "http"
        if self.tcp:
            return "tcp"
        return "ttl"

    @property
    def effective_timeout_ns(self) -> int:
        return self.timeout_ns if self.timeout_ns > 0 else DEFAULT_CHECK_TIMEOUT_NS


def _is_empty_check(fields: Mapping[str, Any]) -> bool:
    # Consul skips a check object whose fields are all zero values (e.g. "Check": {}).
    return all(value in (None, "", 0, False, [], {}) for value in fields.values())


def parse_check(raw: object, *, require_name: bool = False) -> CheckDefinition | None:
    """Decode and validate one check object; ``None`` for an empty one."""
    if not isinstance(raw, dict):
        raise _decode_error("a check must be a JSON object")
    fields = normalise_fields(raw)
    if _is_empty_check(fields) and not require_name:
        return None
    for key, kind in _UNSUPPORTED_CHECK_FIELDS.items():
        if fields.get(key) not in (None, "", [], False):
            raise PayloadError(
                f"Invalid check: {kind} checks are not supported by the development registry"
            )
    check_id = _string(fields, "checkid", "CheckID") or _string(fields, "id", "ID")
    definition = CheckDefinition(
        check_id=check_id,
        name=_string(fields, "name", "Name"),
        notes=_string(fields, "notes", "Notes"),
        status=_string(fields, "status", "Status"),
        service_id=_string(fields, "serviceid", "ServiceID"),
        http=_string(fields, "http", "HTTP"),
        method=_string(fields, "method", "Method"),
        header=_header(fields),
        body=_string(fields, "body", "Body"),
        tls_skip_verify=_bool(fields, "tlsskipverify", "TLSSkipVerify"),
        disable_redirects=_bool(fields, "disableredirects", "DisableRedirects"),
        tcp=_string(fields, "tcp", "TCP"),
        ttl_ns=_duration(fields, "ttl", "TTL"),
        interval_ns=_duration(fields, "interval", "Interval"),
        timeout_ns=_duration(fields, "timeout", "Timeout"),
        deregister_after_ns=_duration(
            fields, "deregistercriticalserviceafter", "DeregisterCriticalServiceAfter"
        ),
        success_before_passing=_int(
            fields, "successbeforepassing", "SuccessBeforePassing", low=0, high=2**31
        ),
        failures_before_critical=_int(
            fields, "failuresbeforecritical", "FailuresBeforeCritical", low=0, high=2**31
        ),
        failures_before_warning=_int(
            fields, "failuresbeforewarning", "FailuresBeforeWarning", low=0, high=2**31
        ),
    )
    if require_name and not definition.name:
        raise PayloadError("Missing check name")
    _validate_check(definition)
    return definition


def _validate_check(check: CheckDefinition) -> None:
    interval_kind = bool(check.http or check.tcp)
    if check.interval_ns > 0 and check.ttl_ns > 0:
        raise PayloadError("Invalid check: Interval and TTL cannot both be specified")
    if interval_kind and check.interval_ns <= 0:
        raise PayloadError(
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks"
        )
    if not interval_kind and check.ttl_ns <= 0:
        raise PayloadError(
            "Invalid check: one of Script, HTTP, TCP, UDP, H2PING, OSService or GRPC "
            "needs to be provided"
        )
    if check.status and check.status not in STATUSES:
        raise PayloadError("Status for checks must 'passing', 'warning', 'critical'")
    if check.http and not re.match(r"^https?://", check.http, re.IGNORECASE):
        raise PayloadError(f"Invalid check: HTTP check URL must be http(s): {check.http!r}")
    if check.tcp and not _split_host_port(check.tcp):
        raise PayloadError(f"Invalid check: TCP check address must be host:port: {check.tcp!r}")


def _split_host_port(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def tcp_target(address: str) -> tuple[str, int]:
    target = _split_host_port(address)
    if target is None:  # parse_check already refused it
        raise PayloadError(f"Invalid check: TCP check address must be host:port: {address!r}")
    return target


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    weights: dict[str, int]
    enable_tag_override: bool
    tagged_addresses: dict[str, dict[str, Any]]
    checks: list[CheckDefinition]


def _validate_meta(meta: Mapping[str, str]) -> None:
    if len(meta) > _META_MAX_PAIRS:
        raise PayloadError(
            "Invalid Service Meta: Node metadata cannot contain more than "
            f"{_META_MAX_PAIRS} key/value pairs"
        )
    for key, value in meta.items():
        if not key:
            raise PayloadError("Invalid Service Meta: Key cannot be blank")
        if not _META_KEY.match(key):
            raise PayloadError("Invalid Service Meta: Key contains invalid characters")
        if len(key) > _META_KEY_MAX:
            raise PayloadError(
                f"Invalid Service Meta: Key is too long (limit: {_META_KEY_MAX} characters)"
            )
        if key.startswith(_META_RESERVED_PREFIX):
            raise PayloadError(
                f"Invalid Service Meta: Key prefix '{_META_RESERVED_PREFIX}' is reserved "
                "for internal use"
            )
        if len(value) > _META_VALUE_MAX:
            raise PayloadError(
                f"Invalid Service Meta: Value is too long (limit: {_META_VALUE_MAX} characters)"
            )


def _weights(fields: Mapping[str, Any]) -> dict[str, int]:
    value = fields.get("weights")
    if value is None:
        return {"Passing": 1, "Warning": 1}
    if not isinstance(value, dict):
        raise _decode_error("Weights must be an object")
    weights = normalise_fields(value)
    passing = _int(weights, "passing", "Weights.Passing", low=0, high=2**31)
    warning = _int(weights, "warning", "Weights.Warning", low=0, high=2**31)
    if passing < 1:
        raise PayloadError("Invalid Weights: Passing must be greater than 0")
    return {"Passing": passing, "Warning": warning}


def _tagged_addresses(fields: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    value = fields.get("taggedaddresses")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _decode_error("TaggedAddresses must be an object")
    result: dict[str, dict[str, Any]] = {}
    for tag, raw in value.items():
        if not isinstance(raw, dict):
            raise _decode_error("TaggedAddresses values must be objects")
        entry = normalise_fields(raw)
        result[str(tag)] = {
            "Address": _string(entry, "address", "Address"),
            "Port": _int(entry, "port", "Port", low=0, high=65535),
        }
    return result


def parse_service(raw: object) -> ServiceDefinition:
    """Decode and validate the body of ``PUT /v1/agent/service/register``."""
    if not isinstance(raw, dict):
        raise _decode_error("the body must be a JSON object")
    fields = normalise_fields(raw)
    name = _string(fields, "name", "Name")
    if not name:
        raise PayloadError("Missing service name")
    address = _string(fields, "address", "Address")
    if _is_unspecified_ip(address):
        raise PayloadError("Invalid service address")
    meta = _string_map(fields, "meta", "Meta")
    _validate_meta(meta)
    checks: list[CheckDefinition] = []
    single = fields.get("check")
    if single is not None:
        parsed = parse_check(single)
        if parsed is not None:
            checks.append(parsed)
    many = fields.get("checks")
    if many is not None:
        if not isinstance(many, list):
            raise _decode_error("Checks must be a list")
        for item in many:
            parsed = parse_check(item)
            if parsed is not None:
                checks.append(parsed)
    return ServiceDefinition(
        id=_string(fields, "id", "ID") or name,
        name=name,
        tags=_string_list(fields, "tags", "Tags"),
        address=address,
        port=_int(fields, "port", "Port", low=0, high=65535),
        meta=meta,
        weights=_weights(fields),
        enable_tag_override=_bool(fields, "enabletagoverride", "EnableTagOverride"),
        tagged_addresses=_tagged_addresses(fields),
        checks=checks,
    )


def _is_unspecified_ip(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


@dataclass(frozen=True)
class CheckUpdate:
    status: str
    output: str


def parse_check_update(raw: object) -> CheckUpdate:
    """Decode the body of ``PUT /v1/agent/check/update/<id>``."""
    if not isinstance(raw, dict):
        raise _decode_error("the body must be a JSON object")
    fields = normalise_fields(raw)
    status = _string(fields, "status", "Status")
    if status not in STATUSES:
        raise PayloadError(f"Invalid check status: '{status}'")
    return CheckUpdate(status=status, output=_string(fields, "output", "Output"))
