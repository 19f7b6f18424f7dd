"""The supervisor's autoscaler on real processes: a load step scales the service out, and it
scales back in only after the scale-down stabilization window (3 s in the test catalogue)."""

from __future__ import annotations

import json
import time

from local_support import Load, PlatformFactory

from infra.process import wait_until

WINDOW = 3.0  # scale_down.stabilization in local_support.FAST_AUTOSCALE


def test_scales_out_under_a_load_step_and_back_in_after_the_window(
    new_platform: PlatformFactory,
) -> None:
    platform = new_platform(autoscale=True)
    runtime = platform.runtime
    switched = platform.meshctl("autoscale", "on")
    assert switched.returncode == 0 and "autoscaler: on" in switched.stdout

    def ready() -> int:
        return sum(1 for r in runtime.replicas(platform.web) if r.state == "ready")

    # 8 clients, each request held 300 ms: ~8 in flight against a target of 2 per replica.
    with Load(platform.url, platform.api_key, threads=8, query="?delay_ms=300") as load:
        wait_until(lambda: ready() == 3, timeout=20, what="scaled out to max (3)")
        assert load.failures == [] and load.errors == []
        stopped = time.monotonic()
    wait_until(lambda: ready() == 1, timeout=20, what="scaled back in to min (1)")
    scaled_in = time.monotonic() - stopped
    assert scaled_in >= WINDOW, f"scaled in after {scaled_in:.1f}s, inside the window"

    decisions = [
        json.loads(line)
        for line in (platform.home / "logs" / "autoscaler.jsonl").read_text().splitlines()
    ]
    ups = [d for d in decisions if d["desired"] > d["current"]]
    downs = [d for d in decisions if d["desired"] < d["current"]]
    assert ups and downs
    first_up = ups[0]
    assert first_up["metrics"][0]["name"] == "in_flight"
    assert first_up["metrics"][0]["value"] > 2 and first_up["raw_desired"] > 1
    assert {"stabilized", "up_limit", "down_limit", "reason"} <= set(first_up)
    held = [d for d in decisions if "stabilization window" in d["reason"]]
    assert held, "some decision was held by the scale-down window"
    status = platform.meshctl("autoscale", "status")
    assert platform.web in status.stdout and "in_flight" in status.stdout
