"""What the HPA-shaped baselines (hpa, keda, phpa) share: behavior, bounds and the HPA's
normalisation (stabilization, rate limits, bounds) applied to a raw recommendation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autoscaler.core.decision import Decision, Reason
from autoscaler.core.reactive import HpaState, normalize
from autoscaler.core.settings import Behavior

__all__ = ["HpaShaped"]


class HpaShaped:
    """Mixin: subclasses set ``name``, ``min_replicas``, ``max_replicas``, ``behavior`` and
    ``state`` in their constructor."""

    name: str
    min_replicas: int
    max_replicas: int
    behavior: Behavior
    state: HpaState

    def _hold(self, current: int) -> Decision:
        """Missing metric: keep the current count (never scale on no data)."""
        return Decision(current, 0, Reason.STALE_METRICS_HOLD, f"{self.name}: metric missing, hold")

    def _finish(
        self,
        now_s: float,
        current: int,
        raw: int,
        message: Callable[[int, str], str],
        components: dict[str, Any],
        reason: Reason = Reason.BASELINE,
    ) -> Decision:
        """Normalise ``raw`` like the HPA and wrap it in a Decision; ``message(final, why)``."""
        final, why, self.state = normalize(
            self.state, now_s, current, raw, self.behavior, self.min_replicas, self.max_replicas
        )
        return Decision(final, 0, reason, message(final, why).strip(), components)
