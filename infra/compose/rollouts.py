"""Rollouts on compose: the shared strategies of ``infra/local/rollouts`` (rolling,
blue-green, canary with analysis), run by the meshctl process that started them.

Compose has no controller to hand a rollout to, so the process that runs ``meshctl rollout``
drives it from a background thread with its own event loop, and stays alive until the
rollout ends (also with ``--no-wait``, and after Ctrl-C stopped following it). Its state is
mirrored to ``.mesh/compose/<project>/rollout-<service>.json``, so ``meshctl rollout
status|abort|promote`` work from any terminal: abort and promote leave a request file that
the running process picks up within a second. When that process died mid-way (a second
Ctrl-C, a closed terminal), status says so and ``meshctl rollout abort`` runs the strategy's
rollback in the process that asks.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from infra.compose.store import RolloutRecord, RolloutStore, process_started
from infra.compose.target import in_thread
from infra.local.rollouts.manager import STRATEGIES, RolloutError, Rollouts
from infra.local.rollouts.state import Rollout
from infra.local.rollouts.target import Target
from infra.runtime.base import RuntimeFailure
from infra.runtime.models import RolloutSpec, RolloutStatus

T = TypeVar("T")
MIRROR_INTERVAL = 0.25
CALL_TIMEOUT = 120.0  # a call into the loop: start (validates, may run docker-compose config)


class ComposeRollouts:
    """The rollouts this process runs, and the records of those other processes run."""

    def __init__(
        self,
        target: Target,
        validate: Callable[[RolloutSpec], None],
        store: RolloutStore,
        on_finish: Callable[[str], None],
    ) -> None:
        self.target = target
        self.store = store
        self.on_finish = on_finish  # cleanup once a rollout ended (overrides of gone versions)
        self.manager = Rollouts(target, validate)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._mine: dict[str, RolloutRecord] = {}
        self._mirrors: dict[str, asyncio.Future[None]] = {}  # referenced: tasks are weak
        # What status answers: the mirror's last copy, so "finished" shows once the record
        # is written and the retired version's files are gone.
        self._published: dict[str, RolloutStatus] = {}

    # -- the loop thread -----------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                # A daemon thread, so an idle one never holds the process; the exit hook
                # below waits for the rollouts themselves.
                threading.Thread(
                    target=loop.run_forever, name="compose-rollouts", daemon=True
                ).start()
                atexit.register(self._wait_at_exit)
                self._loop = loop
            return self._loop

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the loop thread (the strategies' objects live there)."""

        async def call() -> T:
            return fn()

        future = asyncio.run_coroutine_threadsafe(call(), self._ensure_loop())
        return future.result(timeout=CALL_TIMEOUT)

    def _active_here(self) -> list[str]:
        if self._loop is None:
            return []
        # Until its mirror is done: the last record and the cleanup come after the phase.
        return self._call(lambda: [s for s, m in self._mirrors.items() if not m.done()])

    def _wait_at_exit(self) -> None:
        active = self._active_here()
        if not active:
            return
        names = ", ".join(active)
        print(
            f"meshctl: driving the rollout of {names} until it ends (compose has no "
            f"controller); Ctrl-C leaves it half-done (then: meshctl rollout abort {active[0]})",
            file=sys.stderr,
        )
        try:
            while self._active_here():
                time.sleep(0.5)
        except KeyboardInterrupt:
            print(f"meshctl: left the rollout of {names} half-done", file=sys.stderr)

    # -- the Runtime methods -------------------------------------------------------------------
    def active(self, service: str) -> bool:
        """A rollout of ``service`` runs, here or in another live meshctl process."""
        if service in self._mine:
            return self._call(lambda: self.manager.active(service))
        return self.store.busy(service)

    def start(self, spec: RolloutSpec) -> RolloutStatus:
        record = self.store.record(spec.service)
        if record is not None and spec.service not in self._mine and not record.status.finished:
            if record.owner_alive():
                raise RuntimeFailure(
                    f"{spec.service} already has a rollout in progress, run by meshctl pid "
                    f"{record.owner} (meshctl rollout status|abort {spec.service})"
                )
            raise RuntimeFailure(
                f"the last rollout of {spec.service} was left half-done by meshctl pid "
                f"{record.owner}: meshctl rollout abort {spec.service} first"
            )

        # The last rollout's mirror writes its final record a moment after it finished.
        previous = self._mirrors.get(spec.service)
        deadline = time.monotonic() + 10
        while previous is not None and not previous.done() and time.monotonic() < deadline:
            time.sleep(0.05)

        def start() -> RolloutStatus:
            status = self.manager.start(spec)
            rollout = self.manager.rollouts[spec.service]
            self._mine[spec.service] = RolloutRecord(
                owner=os.getpid(),
                owner_started=process_started(os.getpid()),
                spec=spec,
                replicas=rollout.replicas,
                status=status,
            )
            self._published[spec.service] = status.model_copy(deep=True)
            # Written before returning: another terminal may ask at once.
            self.store.save(self._mine[spec.service])
            self._mirrors[spec.service] = asyncio.ensure_future(self._mirror(spec.service))
            return status.model_copy(deep=True)

        try:
            return self._call(start)
        except RolloutError as exc:
            raise RuntimeFailure(str(exc)) from None

    async def _mirror(self, service: str) -> None:
        """Until the rollout ends: publish its status, take other terminals' requests."""
        rollout = self.manager.rollouts[service]
        record = self._mine[service]
        while True:
            action = self.store.take_request(service)
            try:
                if action == "abort":
                    self.manager.abort(service)
                elif action == "promote":
                    self.manager.promote(service)
            except RolloutError as exc:
                rollout.note(f"{action} from another terminal refused: {exc}")
            snapshot = rollout.status.model_copy(deep=True)
            finished = snapshot.finished and rollout.task is not None and rollout.task.done()
            if snapshot.finished and not finished:
                # The phase is final but the strategy's task is still winding down: say
                # "finished" only after the cleanup below, or a caller who sees it acts on
                # files that are about to go (an override removed under docker-compose).
                await asyncio.sleep(MIRROR_INTERVAL)
                continue
            if finished:
                await in_thread(self.on_finish, service)
            record.status = snapshot
            self.store.save(record)
            self._published[service] = snapshot
            if finished:
                return
            await asyncio.sleep(MIRROR_INTERVAL)

    def get(self, service: str) -> RolloutStatus | None:
        if service in self._mine:
            return self._call(lambda: self._published[service].model_copy(deep=True))
        record = self.store.record(service)
        if record is None:
            return None
        if record.orphaned():
            return record.status.model_copy(
                update={
                    "phase": "failed",
                    "message": f"the meshctl process that ran it (pid {record.owner}) exited "
                    f"at: {record.status.message}; meshctl rollout abort {service} rolls back",
                }
            )
        return record.status

    def abort(self, service: str) -> RolloutStatus:
        if service in self._mine:
            try:
                return self._call(lambda: self.manager.abort(service).model_copy(deep=True))
            except RolloutError as exc:
                raise RuntimeFailure(str(exc)) from None
        record = self._unfinished(service)
        if record.owner_alive():
            self.store.request(service, "abort")
            return record.status
        return self._call(lambda: self._adopt(record))

    def promote(self, service: str) -> RolloutStatus:
        if service in self._mine:
            try:
                return self._call(lambda: self.manager.promote(service).model_copy(deep=True))
            except RolloutError as exc:
                raise RuntimeFailure(str(exc)) from None
        record = self._unfinished(service)
        if not record.owner_alive():
            raise RuntimeFailure(
                f"the meshctl process that ran it (pid {record.owner}) exited: "
                f"meshctl rollout abort {service}, then start it again"
            )
        if record.spec.strategy == "rolling":
            raise RuntimeFailure("a rolling update has nothing to promote")
        self.store.request(service, "promote")
        return record.status

    def _unfinished(self, service: str) -> RolloutRecord:
        record = self.store.record(service)
        if record is None or record.status.finished:
            last = f" (last: {record.status.phase})" if record is not None else ""
            raise RuntimeFailure(f"no rollout of {service} in progress{last}")
        return record

    def _adopt(self, record: RolloutRecord) -> RolloutStatus:
        """Roll back a rollout whose process died: the strategy's own undo, run here."""
        service = record.spec.service
        rollout = Rollout(record.spec, record.status.stable, record.replicas)
        rollout.status = record.status.model_copy(deep=True)
        self.manager.rollouts[service] = rollout
        self._published[service] = rollout.status.model_copy(deep=True)
        self._mine[service] = record.model_copy(
            update={"owner": os.getpid(), "owner_started": process_started(os.getpid())}
        )
        undo = STRATEGIES[record.spec.strategy].undo
        reason = f"aborted after meshctl pid {record.owner} exited mid-way"
        # The manager's own rollback path (phase, notes, the final message), as for any abort.
        rollout.task = asyncio.ensure_future(
            self.manager._undo(rollout, undo, reason, failed=False)
        )
        self._mirrors[service] = asyncio.ensure_future(self._mirror(service))
        return rollout.status.model_copy(deep=True)
