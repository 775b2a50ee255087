"""Worker lifecycle: loading -> (warm | active) <-> ..., -> draining.

Follows the warm-pool protocol of DESIGN.md: *ready* means loaded and warmed up with a real
generation, for warm and active pods alike; which pods get traffic is decided by the pod label
``surgecast.io/role`` (the Service selects ``role=active``), and the worker reports its role in
the ``surgecast_worker_state`` metric and on ``GET /status``. The role changes on an
authenticated admin call or when the downward-API labels file changes. A warm worker still
answers requests sent to it: right after promotion the label flips before the kubelet rewrites
the labels file, so refusing would drop the first requests of a promotion.

SIGTERM: readiness false at once, new requests 503, accepted requests finish within the grace
period, then the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

log = logging.getLogger("model_worker")

ROLE_LABEL = "surgecast.io/role"


class State(StrEnum):
    """What the worker is doing; mirrored in the ``surgecast_worker_state`` metric."""

    LOADING = "loading"
    WARM = "warm"
    ACTIVE = "active"
    DRAINING = "draining"


def read_role_file(path: Path) -> str | None:
    """The ``surgecast.io/role`` value of a downward-API labels file (``key="value"`` lines).

    Returns ``None`` when the file or the label is missing (keep the current role).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == ROLE_LABEL:
            return value.strip().strip('"')
    return None


class Lifecycle:
    """State, readiness and the drain of one worker. Not thread-safe: event loop only."""

    def __init__(self, start_role: str, on_state: Callable[[str], None]) -> None:
        if start_role not in (State.WARM.value, State.ACTIVE.value):
            raise ValueError(f"start role must be 'warm' or 'active', not {start_role!r}")
        self.state = State.LOADING
        self.role = State(start_role)
        self.warmed_up = False
        self.in_flight = 0
        self._on_state = on_state
        self._idle = asyncio.Event()
        self._idle.set()
        self.promoted_at: float | None = None
        self._role_listeners: list[Callable[[str], None]] = []
        on_state(self.state.value)

    def on_role(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(role)`` now and whenever the role changes (event loop)."""
        self._role_listeners.append(listener)
        listener(self.role.value)

    @property
    def ready(self) -> bool:
        """Loaded, warmed up and not draining (warm or active)."""
        return self.warmed_up and self.state in (State.WARM, State.ACTIVE)

    @property
    def accepting(self) -> bool:
        """Whether new generation requests are admitted."""
        return self.ready

    def _set(self, state: State) -> None:
        if state != self.state:
            log.info("worker state %s -> %s", self.state.value, state.value)
        self.state = state
        self._on_state(state.value)

    def mark_warmed_up(self) -> None:
        """Warmup generation done: enter the configured role."""
        self.warmed_up = True
        if self.state is State.LOADING:
            self._set(self.role)

    def set_role(self, role: str) -> bool:
        """Promote (``active``) or demote (``warm``); returns whether anything changed."""
        if role not in (State.WARM.value, State.ACTIVE.value):
            raise ValueError(f"role must be 'warm' or 'active', not {role!r}")
        new = State(role)
        changed = new != self.role
        self.role = new
        if new is State.ACTIVE and changed:
            self.promoted_at = time.monotonic()
        if self.state in (State.WARM, State.ACTIVE):
            self._set(new)
        if changed:
            for listener in self._role_listeners:
                listener(new.value)
        return changed

    def begin(self) -> None:
        """An accepted request starts."""
        self.in_flight += 1
        self._idle.clear()

    def end(self) -> None:
        """An accepted request is done (answered, failed or timed out)."""
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Stop admitting, wait for accepted work; True when all of it finished in time."""
        self._set(State.DRAINING)
        if await self.wait_idle(timeout_s):
            return True
        log.warning("drain: %d requests still in flight after %.1fs", self.in_flight, timeout_s)
        return False

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False when ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True

    async def watch_role_file(
        self, path: Path, interval_s: float = 0.5, applied: str | None = None
    ) -> None:
        """Follow the labels file until cancelled. Its role is applied only when the file's
        value changes (``applied``: the value already applied), so a role set meanwhile by
        the admin API stays until the label itself changes."""
        while True:
            role = read_role_file(path)
            if role in (State.WARM.value, State.ACTIVE.value) and role != applied:
                applied = role
                if self.state is not State.DRAINING:
                    self.set_role(role)
            await asyncio.sleep(interval_s)
