"""Blue-green and canary rollouts driven from inside the meshctl process.

The local runtime runs rollouts in its supervisor. On Kubernetes there is no controller of ours
in the cluster, so meshctl itself is the controller, as the Argo Rollouts kubectl plugin would
be without the Argo controller: :meth:`RolloutDriver.start` runs the shared strategies
(``infra/local/rollouts``: the same Rollouts manager, blue-green and canary as the supervisor
runs) on an asyncio loop in a background thread; status, abort and promote reach that loop from
the calling thread. They reach *this process's* rollouts only: another meshctl cannot see them.

A rollout lives as long as the process. When meshctl exits before its rollout is done, the exit
waits for it; a rollout paused for a promote is rolled back (nothing could promote it once this
process is gone), and so is any rollout when that wait is interrupted (Ctrl-C): the cluster is
never left half-switched with nothing driving it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from infra.k8s.target import K8sTarget
from infra.local.rollouts.manager import RolloutError, Rollouts
from infra.runtime.base import RuntimeFailure
from infra.runtime.models import RolloutSpec, RolloutStatus

log = logging.getLogger(__name__)
T = TypeVar("T")
CALL_TIMEOUT = 60.0  # a call into the loop waits at most for one API request of the rollout
ROLLBACK_TIMEOUT = 300.0


class RolloutDriver:
    def __init__(self, target: K8sTarget, check: Callable[[RolloutSpec], str]) -> None:
        """``check`` refuses a spec (:class:`RuntimeFailure`) or returns the stable version."""
        self.target = target
        self.check = check
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._rollouts: Rollouts | None = None

    # -- the loop ------------------------------------------------------------------------------
    def _started(self) -> tuple[asyncio.AbstractEventLoop, Rollouts]:
        with self._lock:
            if self._loop is None or self._rollouts is None:
                loop = asyncio.new_event_loop()
                # A daemon thread, so that the exit hook below (which runs after non-daemon
                # threads are joined) still has the loop to wait on or roll back with.
                thread = threading.Thread(
                    target=loop.run_forever, name="meshctl-rollouts", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
                self._rollouts = Rollouts(self.target, self._validate)
                atexit.register(self.on_exit)
            return self._loop, self._rollouts

    def _call(self, fn: Callable[[Rollouts], T]) -> T:
        """Run ``fn`` on the loop's thread (the manager and its statuses are not thread-safe)."""
        loop, rollouts = self._started()

        async def run() -> T:
            return fn(rollouts)

        try:
            return asyncio.run_coroutine_threadsafe(run(), loop).result(CALL_TIMEOUT)
        except RolloutError as exc:
            raise RuntimeFailure(str(exc)) from None
        except TimeoutError:
            raise RuntimeFailure(
                f"the rollout thread did not answer within {CALL_TIMEOUT:g}s "
                "(is the API server or Consul hanging?)"
            ) from None

    def _validate(self, spec: RolloutSpec) -> None:
        assert self._rollouts is not None
        # Before the runtime's checks: begin() must not replace the plan of a running rollout.
        if self._rollouts.active(spec.service):
            raise RolloutError(
                "rollout_in_progress",
                f"{spec.service} already has a rollout in progress "
                f"(meshctl rollout status|abort {spec.service})",
            )
        stable = self.check(spec)
        self.target.begin(spec.service, stable, spec.version)

    # -- what the runtime asks -----------------------------------------------------------------
    def start(self, spec: RolloutSpec) -> RolloutStatus:
        return self._call(lambda r: r.start(spec).model_copy(deep=True))

    def get(self, service: str) -> RolloutStatus | None:
        if self._loop is None:
            return None

        def get(r: Rollouts) -> RolloutStatus | None:
            status = r.get(service)
            return status.model_copy(deep=True) if status is not None else None

        return self._call(get)

    def active(self, service: str) -> bool:
        return self._loop is not None and self._call(lambda r: r.active(service))

    def abort(self, service: str) -> RolloutStatus:
        def abort(r: Rollouts) -> RolloutStatus:
            plan = self.target.plans.get(service)
            if r.active(service) and plan is not None and plan.committed:
                raise RuntimeFailure(f"{service} already runs {plan.version}: nothing to abort")
            return r.abort(service).model_copy(deep=True)

        return self._call(abort)

    def promote(self, service: str) -> RolloutStatus:
        return self._call(lambda r: r.promote(service).model_copy(deep=True))

    # -- the end -------------------------------------------------------------------------------
    def _unfinished(self) -> dict[str, RolloutStatus]:
        return self._call(
            lambda r: {k: v.model_copy(deep=True) for k, v in r.all().items() if not v.finished}
        )

    def _abort_all(self, only_paused: bool = False) -> None:
        def abort(r: Rollouts) -> None:
            for service, status in r.all().items():
                plan = self.target.plans.get(service)
                if status.finished or (plan is not None and plan.committed):
                    continue  # a committed rollout is only clearing the weights: let it end
                if status.phase == "paused" or not only_paused:
                    r.abort(service)

        self._call(abort)

    def _wait(self, timeout: float | None) -> None:
        loop, rollouts = self._started()

        async def wait() -> None:
            tasks = [x.task for x in rollouts.rollouts.values() if x.task and not x.task.done()]
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)

        asyncio.run_coroutine_threadsafe(wait(), loop).result()

    def on_exit(self) -> None:
        """At meshctl's exit (``atexit``): let running rollouts finish, roll back paused ones,
        and everything when interrupted."""
        if self._loop is None:
            return
        try:
            self._abort_all(only_paused=True)
            unfinished = self._unfinished()
            if unfinished:
                log.warning(
                    "meshctl: waiting for the rollout of %s to finish (Ctrl-C rolls it back)",
                    ", ".join(sorted(unfinished)),
                )
            self._wait(None)
        except KeyboardInterrupt:
            self._abort_all()
            self._wait(ROLLBACK_TIMEOUT)

    def close(self, timeout: float = ROLLBACK_TIMEOUT) -> None:
        """Roll back whatever is unfinished, then stop the thread (tests, embedding code)."""
        if self._loop is None or self._thread is None:
            return
        atexit.unregister(self.on_exit)
        self._abort_all()
        self._wait(timeout)
        loop, rollouts = self._started()
        asyncio.run_coroutine_threadsafe(rollouts.stop(), loop).result(CALL_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(CALL_TIMEOUT)
        loop.close()
        self._loop = self._thread = self._rollouts = None
