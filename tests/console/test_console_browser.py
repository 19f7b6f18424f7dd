"""The console in a real browser, against the real local platform under a real Locust load.

Real: Chromium (Debian's, driven by Playwright), the console process, the gateway and the four
services, tansu, valkey, Locust started from the page. Not real Consul: the development
registry (no Consul binary installs here). The tests run in order on one platform, as a user
would click through it: look, load, act (refused without the token, done with it), roll out
a good canary and a bad one, open a trace, export the window and open it offline.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from console_support import SHOTS, Platform, meshctl, shot

pytestmark = pytest.mark.timeout(240)

SERVICES = ("orders", "inventory", "payments", "notifications")
TOPICS = (
    "order.created",
    "inventory.reserved",
    "inventory.rejected",
    "payment.succeeded",
    "payment.failed",
    "order.confirmed",
    "order.cancelled",
)
GROUPS = ("inventory", "payments", "orders", "notifications")


def edge_rps(page: Any, edge: str) -> float:
    text = page.locator(f'g.edge-label[data-edge="{edge}"] text').first.text_content() or ""
    match = re.match(r"\s*([0-9.]+) req/s", text)
    assert match, f"edge label {edge!r} reads {text!r}"
    return float(match.group(1))


def wait_for(page: Any, check: Any, timeout: float, what: str, every: float = 0.25) -> Any:
    """Poll ``check(page)`` until it is truthy (the page updates itself once a second)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check(page)
        if last:
            return last
        page.wait_for_timeout(every * 1000)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def login(page: Any, token: str) -> None:
    page.get_by_role("button", name="Log in").first.click()
    page.get_by_label("admin token").fill(token)
    page.locator("#login-form").get_by_role("button", name="Log in").click()
    page.wait_for_function("document.querySelector('#login').textContent === 'Log out'")


def test_up_prints_the_console_and_status_shows_it(platform: Platform) -> None:
    assert f"console   {platform.console}" in platform.up.stdout
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", platform.console)
    status, health = platform.call("GET", "/healthz")
    assert status == 200 and health["frames"] >= 1


def test_the_page_shows_every_part(page: Any, platform: Platform) -> None:
    """(How fast the first paint comes is a figure of ``make bench-console``, not a test.)"""
    status, _ = platform.act("load", {"mode": "closed", "users": 6, "duration": "40s"})
    assert status == 200
    page.goto(platform.console)
    page.wait_for_selector('g[data-key="ver:orders@v1"]')
    assert page.evaluate("window.__meshFirstPaint") is not None  # painted from the inlined frame
    for service in SERVICES:
        assert page.locator(f'g[data-key="svc:{service}"]').count() == 1
        assert page.locator(f'g[data-key="ver:{service}@v1"]').count() == 1
    for topic in TOPICS:
        assert page.locator(f'g[data-key="topic:{topic}"]').count() == 1
    for group in GROUPS:
        assert page.locator(f'g[data-key="group:{group}"]').count() == 1
    for part in ("consul", "redis", "kafka"):
        assert page.locator(f'g[data-key="infra:{part}"]').count() == 1
    assert page.locator('g[data-key="gateway"]').count() == 1
    wait_for(page, lambda p: edge_rps(p, "gateway>orders") > 0, 30, "orders edge traffic")
    shot(page, "console")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(1200)
    shot(page, "console-phone")
    # Nothing overflows the phone's width but the topology, which scrolls in its own box.
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, overflow
    assert not page.errors, page.errors


def test_load_from_the_page_rises_on_the_orders_edge_and_falls_to_zero(
    page: Any, platform: Platform
) -> None:
    platform.act("stop-load")
    page.goto(platform.console)
    wait_for(page, lambda p: edge_rps(p, "gateway>orders") == 0, 30, "quiet before the load")
    login(page, platform.admin_token)
    form = page.locator('form[aria-label="start or stop a load"]')
    form.get_by_label("users").fill("8")
    form.get_by_label("duration s").fill("60")
    form.get_by_role("button", name="Start load").click()
    wait_for(page, lambda p: "running" in (p.text_content("#load-state") or ""), 15, "load runs")
    rising = wait_for(page, lambda p: edge_rps(p, "gateway>orders") > 2, 30, "rps rises")
    form.get_by_role("button", name="Stop load").click()
    wait_for(page, lambda p: "last:" in (p.text_content("#load-state") or ""), 30, "load stops")
    wait_for(page, lambda p: edge_rps(p, "gateway>orders") == 0, 30, "rps falls to zero")
    assert rising
    assert not page.errors, page.errors


def replicas(platform: Platform, service: str) -> int:
    status = json.loads(meshctl(platform.env, "status", "--json").stdout)
    return int(next(s for s in status["services"] if s["name"] == service)["replicas"])


def test_actions_are_refused_without_the_admin_token_and_work_with_it(
    page: Any, platform: Platform
) -> None:
    before = replicas(platform, "payments")
    scale = {"service": "payments", "replicas": before + 1}
    # No credentials at all: 401, for every action.
    for action, body in (
        ("scale", scale),
        ("promote", {"service": "orders"}),
        ("abort", {"service": "orders"}),
    ):
        status, answer = platform.call("POST", f"/api/actions/{action}", body)
        assert status == 401 and answer["error"]["code"] == "login_required", (action, answer)
    # A wrong token: 403.
    status, answer = platform.call(
        "POST", "/api/actions/scale", scale, headers={"Authorization": "Bearer not-the-token"}
    )
    assert status == 403 and answer["error"]["code"] == "invalid_admin_token"
    # A logged-in session without its CSRF token, or from another site: 403.
    page.goto(platform.console)
    login(page, platform.admin_token)
    no_csrf = page.evaluate(
        """async (body) => { const r = await fetch('/api/actions/scale', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
        return [r.status, (await r.json()).error.code]; }""",
        scale,
    )
    assert no_csrf == [403, "csrf_failed"]
    status, answer = platform.call(
        "POST", "/login", {"token": platform.admin_token}, headers={"Origin": "http://evil.example"}
    )
    assert status == 403 and answer["error"]["code"] == "cross_site_request"
    status, answer = platform.call("GET", "/api/session", headers={"Host": "evil.example"})
    assert status == 403 and answer["error"]["code"] == "host_not_allowed"
    assert replicas(platform, "payments") == before, "a refused action changed nothing"
    # The session cookie is HttpOnly and SameSite=Strict.
    cookie = next(c for c in page.context.cookies() if c["name"] == "mesh_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # With the token (logged in on the page): the Scale form works.
    form = page.locator('form[aria-label="scale a service"]')
    form.get_by_label("service").select_option("payments")
    form.get_by_label("replicas").fill(str(before + 1))
    form.get_by_role("button", name="Scale").click()
    wait_for(
        page,
        lambda p: (
            p.locator('g[data-key="ver:payments@v1"] circle.check-passing').count() == before + 1
        ),
        45,
        "payments scaled on the page",
    )
    assert replicas(platform, "payments") == before + 1
    platform.act("scale", {"service": "payments", "replicas": before})


def rollout_row(page: Any, version: str) -> dict[str, str] | None:
    cells = page.locator(f'#rollout tr[data-version="{version}"] td').all_text_contents()
    return (
        dict(zip(("version", "weight", "served", "rps", "errors", "p99"), cells, strict=False))
        or None
    )


def test_a_canary_from_the_page_moves_step_by_step_and_a_bad_one_is_rolled_back(
    page: Any, platform: Platform
) -> None:
    status, _ = platform.act("load", {"mode": "closed", "users": 16, "duration": "150s"})
    assert status == 200
    page.goto(platform.console)
    login(page, platform.admin_token)
    wait_for(page, lambda p: edge_rps(p, "gateway>orders") > 2, 30, "traffic for the analyses")
    form = page.locator('form[aria-label="start a rollout"]')

    def start(version: str) -> None:
        form.get_by_label("service").select_option("orders")
        form.get_by_label("version").fill(version)
        form.get_by_label("strategy").select_option("canary")
        form.get_by_label("steps %").fill("34,67,100")
        form.get_by_label("interval").fill("5s")
        form.get_by_label("max p99").fill("2s")
        form.get_by_label("min requests").fill("4")
        form.get_by_role("button", name="Start rollout").click()

    start("v2")
    weights: list[str] = []

    def follow(p: Any) -> str | None:
        row = rollout_row(p, "v2")
        if row and (not weights or weights[-1] != row["weight"]):
            weights.append(row["weight"])
        phase = p.locator("#rollout [data-phase]").first.get_attribute("data-phase")
        return phase if phase in ("completed", "aborted", "failed") else None

    assert wait_for(page, follow, 90, "canary to v2 finishes") == "completed", weights
    steps = [w for w in weights if w in ("34%", "67%", "100%")]
    assert steps[:2] == ["34%", "67%"], weights  # the weights moved one step at a time
    shot(page, "console-canary-completed")

    start("v3")  # orders v3 answers 30% of its requests with a 500

    def red(p: Any) -> bool:
        box = p.locator('g[data-key="ver:orders@v3"]')
        return box.count() == 1 and "h-failing" in (box.get_attribute("class") or "")

    wait_for(page, red, 60, "orders v3 turns red")
    shot(page, "console-canary-bad")
    phase = wait_for(
        page,
        lambda p: (
            p.locator("#rollout [data-phase]").first.get_attribute("data-phase")
            in ("aborted", "failed")
            and p.locator("#rollout [data-phase]").first.get_attribute("data-phase")
        ),
        60,
        "the bad canary is rolled back",
    )
    assert phase == "aborted"
    message = page.text_content("#rollout [data-rollout-message]") or ""
    assert "analysis failed" in message and "error rate" in message, message
    failed = page.locator('#rollout table[aria-label="analyses"] .badge.fail')
    assert failed.count() >= 1  # the measured analysis that failed, with its numbers
    wait_for(page, lambda p: p.locator('g[data-key="ver:orders@v3"]').count() == 0, 60, "v3 gone")
    shot(page, "console-canary-aborted")
    platform.act("stop-load")
    assert not page.errors, page.errors


def test_a_trace_opened_from_the_page_spans_all_five_services(
    page: Any, platform: Platform
) -> None:
    order = platform.order()
    page.goto(platform.console)
    page.locator("#trace-filter").get_by_label("order id").fill(order)

    def listed(p: Any) -> str | None:
        return p.evaluate(
            """() => { for (const row of document.querySelectorAll('#trace-list tr[data-trace]'))
                if (row.textContent.includes('POST /api/orders')) return row.dataset.trace;
              return null; }"""
        )

    def complete(p: Any) -> bool:
        # Point at the list first, as a user does: it holds still while pointed at, so the
        # row cannot be replaced by the next refresh between finding it and clicking it.
        p.hover(".trace-list-wrap")
        trace_id = listed(p)
        if trace_id is None:
            p.mouse.move(0, 0)
            return False
        p.locator(f'#trace-list tr[data-trace="{trace_id}"]').click()
        p.wait_for_timeout(300)
        p.mouse.move(0, 0)  # let the list refresh before the next look
        services = set((p.locator("#waterfall").get_attribute("data-services") or "").split(","))
        return {"gateway", *SERVICES} <= services

    wait_for(page, complete, 45, "the order's trace with all five services", every=1.0)
    rows = page.locator("#waterfall .span-row")
    assert rows.count() >= 10
    shown = {r.get_attribute("data-span-service") for r in rows.all()}
    assert {"gateway", *SERVICES} <= shown
    shot(page, "console-trace")


def test_a_failing_version_opens_a_failing_trace(page: Any, platform: Platform) -> None:
    """A fault on one version turns it red; one click from its box opens a failing trace."""
    status, _ = platform.act("faults", {"service": "inventory", "version": "v1", "error_rate": 1.0})
    assert status == 200
    try:
        page.goto(platform.console)
        for _ in range(15):
            platform.call(
                "GET", "/api/stock", headers={"X-API-Key": platform.api_key}, base=platform.gateway
            )
        box = page.locator('g[data-key="ver:inventory@v1"]')
        wait_for(page, lambda p: "h-failing" in (box.get_attribute("class") or ""), 30, "red box")
        box.focus()
        page.keyboard.press("Enter")  # reachable from the keyboard
        button = page.locator("#detail [data-failing-trace]")
        wait_for(page, lambda p: button.count() == 1, 20, "a failing trace to open")
        button.click()
        page.wait_for_selector("#waterfall .span-row.error")
        assert "error" in (page.text_content("#waterfall h3 .badge") or "")
    finally:
        platform.act("clear-faults", {"service": "inventory", "version": "v1"})


def test_the_export_opens_offline_and_shows_the_same_topology(
    browser: Any, page: Any, platform: Platform, tmp_path: Path
) -> None:
    page.goto(platform.console)
    page.wait_for_selector('g[data-key="svc:orders"]')
    live = sorted(
        page.eval_on_selector_all("#topology g[data-key]", "els => els.map(e => e.dataset.key)")
    )
    with page.expect_download() as download:
        page.get_by_role("link", name="Export").click()
    exported = tmp_path / "console.html"
    download.value.save_as(exported)
    assert exported.stat().st_size > 20_000
    offline = browser.new_context(viewport={"width": 1280, "height": 800}, offline=True)
    try:
        other = offline.new_page()
        requests: list[str] = []
        other.on("request", lambda r: requests.append(r.url))
        other.goto(exported.as_uri())
        other.wait_for_selector('g[data-key="svc:orders"]')
        keys = sorted(
            other.eval_on_selector_all(
                "#topology g[data-key]", "els => els.map(e => e.dataset.key)"
            )
        )
        assert {k for k in keys if not k.startswith("slot:")} >= {
            k for k in live if not k.startswith(("slot:", "ver:orders@v3"))
        }
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        # Scrub back to the first recorded second: a frozen view of that moment.
        other.eval_on_selector(
            "#scrub", "el => { el.value = el.min; el.dispatchEvent(new Event('input')); }"
        )
        other.wait_for_timeout(500)
        assert "(-" in (other.text_content("#when") or "")
        shot(other, "console-export")
    finally:
        offline.close()
    assert (SHOTS / "console.png").exists()


def test_every_control_is_labelled_and_the_topology_is_reachable_by_keyboard(
    page: Any, platform: Platform
) -> None:
    page.goto(platform.console)
    page.wait_for_selector('g[data-key="svc:orders"]')
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('button, select, input, a')]
        .filter(el => el.offsetParent !== null || el.closest('dialog'))
        .filter(el => {
          const named = el.getAttribute('aria-label') || (el.labels && el.labels.length)
            || (el.textContent || '').trim() || el.getAttribute('title');
          return !named;
        }).map(el => el.outerHTML.slice(0, 120))"""
    )
    assert unlabelled == [], unlabelled
    # orders runs whichever version the canary test left stable.
    target = page.eval_on_selector('g[data-key^="ver:orders@"]', "el => el.dataset.key")
    reached = set()
    for _ in range(60):
        page.keyboard.press("Tab")
        reached.add(
            page.evaluate("document.activeElement && document.activeElement.dataset.key || ''")
        )
        if target in reached:
            break
    assert target in reached, sorted(reached)
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail:not([hidden]) h3")
    assert f"orders {target.split('@')[1]}" in (page.text_content("#detail h3") or "")
