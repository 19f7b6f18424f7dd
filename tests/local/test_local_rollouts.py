"""Rollouts on the local runtime under continuous requests through the gateway: rolling and
blue-green lose no request; a faulty canary is rolled back automatically; abort and promote
work from another terminal."""

from __future__ import annotations

import time

from local_support import Load, LocalPlatform, PlatformFactory, error_line

from infra.process import wait_until
from infra.runtime.models import RolloutSpec


def versions_served(load: Load, since: float) -> set[str]:
    return {version for t, _, version in list(load.results) if t >= since}


def wait_for_traffic(load: Load, count: int = 50) -> None:
    wait_until(lambda: load.count() >= count, timeout=20, what=f"{count} requests answered")


def test_rolling_update_loses_no_request(new_platform: PlatformFactory) -> None:
    platform = new_platform(replicas=2)
    with Load(platform.url, platform.api_key) as load:
        wait_for_traffic(load)
        result = platform.meshctl("rollout", platform.web, "--version", "v2")
        after = time.monotonic()
        wait_for_traffic(load, load.count() + 50)
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout
    assert load.errors == [] and load.failures == [], (load.errors, load.failures[:5])
    assert len(load.results) > 200
    assert versions_served(load, after) == {"v2"}
    replicas = platform.runtime.replicas(platform.web)
    assert sorted(r.version for r in replicas) == ["v2", "v2"]
    progress = result.stderr
    assert progress.index("v2 1/2 ready") < progress.index("v1 replica drained and stopped")


def test_blue_green_switch_loses_no_request(new_platform: PlatformFactory) -> None:
    platform = new_platform(replicas=2)
    with Load(platform.url, platform.api_key) as load:
        wait_for_traffic(load)
        started = time.monotonic()
        result = platform.meshctl(
            "rollout", platform.web, "--version", "v2", "--strategy", "bluegreen",
            "--keep-blue", "1s",
        )  # fmt: skip
        wait_for_traffic(load, load.count() + 50)
    assert result.returncode == 0, result.stderr
    assert load.errors == [] and load.failures == [], (load.errors, load.failures[:5])
    # One switch, at once: once green has answered, every request sent afterwards is
    # green's. (By answer order alone, a blue request sent just before the switch may
    # finish after a green one sent just after it.)
    timings = [(s, a, v) for s, a, v in load.timings if s >= started]
    first_green = min(a for _, a, v in timings if v == "v2")
    assert {v for s, _, v in timings if s > first_green} == {"v2"}
    assert {v for s, _, v in timings if s < first_green} >= {"v1"}
    assert "smoke check" in result.stderr
    assert platform.runtime.weights(platform.web) is None
    assert {r.version for r in platform.runtime.replicas(platform.web)} == {"v2"}


def test_faulty_canary_is_rolled_back_within_two_intervals(platform: LocalPlatform) -> None:
    interval = 2.0
    with Load(platform.url, platform.api_key, threads=6) as load:
        wait_for_traffic(load)
        started = time.monotonic()
        result = platform.meshctl(
            "rollout", platform.web, "--version", "v3", "--strategy", "canary",
            "--steps", "20,50,100", "--interval", f"{interval}s", "--max-error-rate", "5%",
        )  # fmt: skip
        finished = time.monotonic()
        wait_for_traffic(load, load.count() + 50)
    assert result.returncode == 1
    line = error_line(result)
    assert f"rollout of {platform.web} aborted" in line
    assert "analysis failed at 20%: error rate" in line
    assert "all traffic on v1, v3 stopped" in line
    canary = [t for t, _, v in load.results if v == "v3" and t >= started]
    assert canary, "the canary got traffic"
    assert canary[-1] - canary[0] <= 2 * interval, canary[-1] - canary[0]
    assert versions_served(load, finished) == {"v1"}
    assert platform.runtime.weights(platform.web) is None
    assert {r.version for r in platform.runtime.replicas(platform.web)} == {"v1"}
    state = platform.runtime.rollout_status(platform.web)
    assert state is not None and state.phase == "aborted"
    [analysis] = state.analyses
    assert analysis.verdict == "fail" and analysis.weight == 20 and analysis.requests >= 10


def test_canary_pauses_then_promote_from_another_terminal(platform: LocalPlatform) -> None:
    runtime = platform.runtime
    with Load(platform.url, platform.api_key):
        runtime.rollout(
            RolloutSpec(
                service=platform.web, version="v2", strategy="canary", steps=[50], interval=1.0
            )
        )
        state = runtime.wait_rollout(platform.web, timeout=30)
        assert state.phase == "paused", state.message
        assert state.weights == {"v1": 50, "v2": 50}
        promoted = platform.meshctl("rollout", "promote", platform.web)
        assert promoted.returncode == 0, promoted.stderr
        state = runtime.wait_rollout(platform.web, timeout=30)
    assert state.phase == "completed", state.message
    assert {r.version for r in runtime.replicas(platform.web)} == {"v2"}
    assert runtime.weights(platform.web) is None


def test_abort_from_another_terminal(platform: LocalPlatform) -> None:
    runtime = platform.runtime
    runtime.rollout(
        RolloutSpec(service=platform.web, version="v2", strategy="canary", interval=60.0)
    )
    wait_until(
        lambda: runtime.weights(platform.web) == {"v1": 90, "v2": 10},
        timeout=20,
        what="the first canary step",
    )
    aborted = platform.meshctl("rollout", "abort", platform.web)
    assert aborted.returncode == 0, aborted.stderr
    state = runtime.wait_rollout(platform.web, timeout=20)
    assert state.phase == "aborted"
    assert "aborted by meshctl rollout abort" in state.message
    assert runtime.weights(platform.web) is None
    assert {r.version for r in runtime.replicas(platform.web)} == {"v1"}


def test_a_crashing_version_is_rolled_back(platform: LocalPlatform) -> None:
    result = platform.meshctl("rollout", platform.web, "--version", "v9")
    assert result.returncode == 1
    assert f"{platform.web} v9 keeps crashing (exit 3)" in error_line(result)
    assert {r.version for r in platform.runtime.replicas(platform.web)} == {"v1"}
