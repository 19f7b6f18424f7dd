"""The redis-crash drill's judgement on synthetic audits: which lost orders the fsync window
excuses (everysec: 2 s before the crash; always: none), which fail the drill, and how each
lost order is listed (the real drill, on the real platform, is in test_drills.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from infra.runtime.models import GatewayInfo
from loadtests.drills.audit import OrderAudit
from loadtests.drills.catalog import RedisCrash
from loadtests.drills.engine import DrillContext, DrillOptions, lost_detail

STARTED, CRASH, BACK = 1000.0, 1012.0, 1013.0


def context(mode: str, **facts: Any) -> DrillContext:
    ctx = DrillContext(
        runtime=None,  # type: ignore[arg-type]  # judging reads no runtime
        gateway=GatewayInfo(url="http://127.0.0.1:1", api_key="k"),
        options=DrillOptions(duration=20),
        say=lambda _m: None,
        stop=threading.Event(),
    )
    ctx.started_at = STARTED
    ctx.facts.update(
        {
            "persistence": mode,
            "fsync_window_s": {"always": 0.0, "everysec": 2.0}.get(mode, 0.0),
            "crashed_at": CRASH,
            "redis_back_at": BACK,
            "restarts_before": {"orders-1": 0, "inventory-1": 0},
            "restarts_after": {"orders-1": 0, "inventory-1": 0},
            **facts,
        }
    )
    return ctx


def audit(lost: dict[str, tuple[float, str | None]]) -> OrderAudit:
    """Orders accepted each second from 1004 to 1019 (terminal), plus ``lost``: id ->
    (accepted at, problem: "HTTP 404", or None for still PENDING)."""
    result = OrderAudit()
    for n, at in enumerate(range(1004, 1020)):
        if at in (1012,):  # Redis is down: nothing accepted
            continue
        result.accepted_at[f"ok-{n}"] = float(at) + 0.5
        result.terminal[f"ok-{n}"] = "CONFIRMED"
    for order_id, (at, problem) in lost.items():
        result.accepted_at[order_id] = at
        if problem is None:
            result.pending.append(order_id)
        else:
            result.unreadable[order_id] = problem
    result.accepted = len(result.accepted_at)
    return result


def judged(ctx: DrillContext, result: OrderAudit) -> dict[str, bool]:
    return {s.name.split(" (")[0]: s.passed for s in RedisCrash(ctx.options).judge(ctx, [], result)}


KEPT = "no order lost from before the fsync window"


def test_nothing_lost_passes() -> None:
    assert all(judged(context("always"), audit({})).values())


def test_everysec_excuses_the_last_two_seconds_and_lists_them() -> None:
    ctx = context("everysec")
    result = audit({"late": (CRASH - 0.6, "HTTP 404"), "edge": (CRASH - 1.9, None)})
    verdicts = judged(ctx, result)
    assert verdicts[KEPT] and all(verdicts.values())
    assert (ctx.facts["orders_lost_in_window"], ctx.facts["orders_lost_outside_window"]) == (2, 0)
    listed = {row["order"]: row for row in ctx.facts["lost_detail"]}
    assert listed["late"]["in_window"] and listed["late"]["before_crash_s"] == 0.6
    assert listed["late"]["accepted_s"] == 11.4
    assert listed["late"]["why"].startswith("gone: the gateway answers 404")
    assert listed["edge"]["why"] == "still PENDING at the audit's deadline"


def test_everysec_fails_on_an_order_from_before_the_window() -> None:
    ctx = context("everysec")
    verdicts = judged(ctx, audit({"old": (CRASH - 2.5, "HTTP 404")}))
    assert not verdicts[KEPT]
    assert ctx.facts["orders_lost_outside_window"] == 1


def test_always_excuses_nothing() -> None:
    ctx = context("always")
    assert not judged(ctx, audit({"late": (CRASH - 0.05, "HTTP 404")}))[KEPT]
    assert ctx.facts["lost_detail"][0]["in_window"] is False


def test_off_fails_when_it_loses_what_came_before() -> None:
    lost = {f"gone-{n}": (1004.2 + n, "HTTP 404") for n in range(7)}
    ctx = context("off")
    verdicts = judged(ctx, audit(lost))
    assert not verdicts[KEPT] and ctx.facts["orders_lost_outside_window"] == 7


def test_an_order_lost_after_the_restart_is_never_excused() -> None:
    ctx = context("everysec")
    verdicts = judged(ctx, audit({"after": (BACK + 0.5, None)}))
    assert not verdicts[KEPT]
    assert not verdicts["orders accepted after the restart all reach a final state"]


def test_the_saga_must_resume_and_nothing_restart() -> None:
    nothing_after = audit({})
    for order_id in [i for i, at in nothing_after.accepted_at.items() if at >= BACK]:
        del nothing_after.accepted_at[order_id]
    verdicts = judged(context("always"), nothing_after)
    assert not verdicts["the shop accepts orders again by itself"]

    late = audit({})
    for order_id, at in list(late.accepted_at.items()):
        if BACK <= at < BACK + 16:
            late.accepted_at[order_id] = at + 16
    assert not judged(context("always"), late)["the shop accepts orders again by itself"]

    restarted = context("always", restarts_after={"orders-1": 1, "inventory-1": 0})
    assert not judged(restarted, audit({}))["no replica restarted"]


def test_every_drill_lists_its_lost_orders_with_when_and_why() -> None:
    ctx = context("everysec")
    rows = lost_detail(audit({"x": (1005.25, "HTTP 503")}), ctx)
    assert rows == [{"order": "x", "accepted_s": 5.25, "why": "unreadable: HTTP 503"}]


async def test_the_audit_stops_waiting_for_orders_that_are_gone() -> None:
    """An order answered 404 for GONE_AFTER seconds is gone for good (nothing but its POST
    creates an order): the audit does not sit out its deadline for it, and lists it, with
    a real HTTP server playing the gateway."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from loadtests.drills.audit import GONE_AFTER, audit_orders_async

    polls = {"slow": 0}

    async def order(request: web.Request) -> web.Response:
        order_id = request.match_info["id"]
        if order_id == "gone":
            return web.json_response({"error": {"code": "not_found"}}, status=404)
        polls["slow"] += 1  # PENDING for a few rounds, then CONFIRMED
        status = "CONFIRMED" if polls["slow"] > 3 else "PENDING"
        return web.json_response({"id": order_id, "status": status, "timeline": []})

    app = web.Application()
    app.router.add_get("/api/orders/{id}", order)
    async with TestServer(app, host="127.0.0.1") as server:
        gateway = GatewayInfo(url=str(server.make_url("")).rstrip("/"), api_key="k")
        deadline = time.time() + 120
        result = await audit_orders_async(gateway, ["slow", "gone"], deadline)
    assert result.terminal == {"slow": "CONFIRMED"} and result.unreadable == {"gone": "HTTP 404"}
    assert GONE_AFTER <= result.seconds < 60, "stopped long before its deadline"


def test_the_report_lists_the_lost_orders(tmp_path: Path) -> None:
    from loadtests.drills.report import write_report

    lost = [
        {"order": "o-1", "accepted_s": 9.5, "in_window": True, "why": "gone: 404"},
        {"order": "<b>o-2</b>", "accepted_s": 3.0, "in_window": False, "why": "still PENDING"},
    ]
    report = {"timeline": [{"t": 1.0, "rps": 1}], "summary": {"orders_lost": 300}, "lost": lost}
    page = write_report(report, tmp_path / "lost").html.read_text()
    section = page[page.index('<section id="lost">') :].split("</section>")[0]
    assert "Lost orders (2 of 300)" in section
    assert "<th>in_window</th>" in section and "<td>yes</td>" in section
    assert "&lt;b&gt;o-2&lt;/b&gt;" in section and "<b>o-2" not in section
    clean = write_report({"timeline": [], "lost": []}, tmp_path / "none").html.read_text()
    assert 'id="lost"' not in clean


def test_no_crash_is_a_failure_and_measures_nothing() -> None:
    ctx = context("everysec")
    del ctx.facts["crashed_at"]
    drill = RedisCrash(ctx.options)
    assert drill.measure_crash(ctx, audit({})) == {"redis_crashed": 0}
    assert judged(ctx, audit({})) == {"redis crashed and started again": False}


def test_the_figures_a_lesson_judges() -> None:
    ctx = context("everysec")
    figures = RedisCrash(ctx.options).measure_crash(
        ctx, audit({"late": (CRASH - 0.5, "HTTP 404"), "old": (CRASH - 6.0, "HTTP 404")})
    )
    assert figures["persistence"] == "everysec" and figures["redis_crashed"] == 1
    assert (figures["orders_lost_in_window"], figures["orders_lost_outside_window"]) == (1, 1)
    assert figures["orders_accepted_after_restart"] == 7  # 1013.5 .. 1019.5
    assert (figures["orders_stuck_after_restart"], figures["accepting_again_s"]) == (0, 0.5)
    assert figures["replicas_restarted"] == 0
