"""Property-based fuzzing of the gateway's inputs: nothing a client sends earns a 5xx.

Requests go over a raw socket (``http.client``) so that methods, paths, headers and bodies
reach the gateway as generated, not as a polite client library would tidy them. The echo
upstreams behind it are healthy, so any 5xx is the gateway's own fault.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import pytest
from gw_support import Fleet, Gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.process import wait_until

PREFIXES = ["/api/orders", "/api/stock", "/api", "/api/", "/admin/traffic", "/", "/apix"]
STANDARD_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
METHODS = [*STANDARD_METHODS, "FOO", "get"]
# Query keys the echo upstream obeys (status, delay_ms) are left out: those would be asked-for
# upstream errors, not gateway faults.
QUERY_KEYS = st.sampled_from(["customer_id", "limit", "cursor", "x", "ä", "a b", ""])
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
    max_size=40,
)


@pytest.fixture(scope="module")
def fuzz_target(gateway: Gateway, fleet_module: Fleet) -> Iterator[Gateway]:
    for logical in ("orders", "inventory"):
        fleet_module.start(gateway.services[logical])

    def known() -> bool:
        request = http.client.HTTPConnection(*_hostport(gateway), timeout=5)
        request.request("GET", "/admin/instances", headers=gateway.admin_headers)
        data = json.loads(request.getresponse().read())
        return all(data[gateway.services[n]]["instances"] for n in ("orders", "inventory"))

    wait_until(known, timeout=10, what="upstreams known to the gateway")
    yield gateway


@pytest.fixture(scope="module")
def fleet_module(infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:  # type: ignore[no-untyped-def]
    upstreams = Fleet(infra.env(), tmp_path_factory.mktemp("fuzz-fleet"))
    yield upstreams
    upstreams.stop_all()


def _hostport(gateway: Gateway) -> tuple[str, int]:
    parts = urlsplit(gateway.url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    path = draw(st.sampled_from(PREFIXES)) + quote(draw(TEXT), safe="/%?=&")
    if draw(st.booleans()):
        pairs = draw(st.lists(st.tuples(QUERY_KEYS, TEXT), max_size=3))
        path += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
    headers = {}
    if draw(st.booleans()):
        headers["X-API-Key"] = draw(st.sampled_from(["__KEY__", "", "wrong", "x" * 300]))
    if draw(st.booleans()):
        headers["X-Mesh-Version"] = draw(st.sampled_from(["v1", "v2", "v", "1", "v99999"]))
    if draw(st.booleans()):
        # Header values are visible ASCII (RFC 9110); anything else llhttp refuses itself.
        headers["Idempotency-Key"] = draw(
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60)
        )
    if draw(st.booleans()):
        headers["Content-Type"] = draw(
            st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"])
        )
    if draw(st.booleans()):
        headers["Authorization"] = "Bearer " + draw(st.sampled_from(["__ADMIN__", "nope"]))
    body = draw(
        st.one_of(
            st.just(b""),
            st.binary(max_size=200),
            st.builds(
                lambda v: json.dumps(v).encode(),
                st.recursive(
                    st.none() | st.booleans() | st.integers() | TEXT,
                    lambda inner: (
                        st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3)
                    ),
                    max_leaves=8,
                ),
            ),
        )
    )
    return draw(st.sampled_from(METHODS)), path, headers, body


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=requests())
def test_no_5xx_from_client_input(
    fuzz_target: Gateway, request: tuple[str, str, dict[str, str], bytes]
) -> None:
    method, path, headers, body = request
    headers = {
        k: v.replace("__KEY__", fuzz_target.api_key).replace("__ADMIN__", fuzz_target.admin_token)
        for k, v in headers.items()
    }
    conn = http.client.HTTPConnection(*_hostport(fuzz_target), timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    assert response.status < 500, (method, path, headers, body, response.status, payload[:300])
    if response.status < 400 or method == "HEAD":
        return
    if method not in STANDARD_METHODS:
        # llhttp refuses unknown methods before any handler runs: a plain-text 400.
        assert response.status == 400
        return
    assert set(json.loads(payload)) == {"error"}, payload[:300]
