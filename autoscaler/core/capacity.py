"""Per-replica capacity: configured, refined online from saturated throughput, bounded."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CapacityEstimate", "update_capacity"]


@dataclass(frozen=True)
class CapacityEstimate:
    """Current belief about one replica's capacity (req/s at saturation).

    Attributes:
        configured_rps: the configured capacity (the prior).
        rps: the current estimate.
        samples: saturated observations folded in so far.
        min_ratio, max_ratio: the estimate stays in ``[min_ratio, max_ratio] * configured``.
        alpha: weight of a new observation (exponential smoothing).
    """

    configured_rps: float
    rps: float
    samples: int = 0
    min_ratio: float = 0.5
    max_ratio: float = 2.0
    alpha: float = 0.2

    @classmethod
    def initial(
        cls, configured_rps: float, *, min_ratio: float = 0.5, max_ratio: float = 2.0
    ) -> CapacityEstimate:
        """The prior, before any observation."""
        if configured_rps <= 0:
            raise ValueError(f"configured capacity must be > 0 req/s, got {configured_rps}")
        return cls(configured_rps, configured_rps, 0, min_ratio, max_ratio)


def update_capacity(
    est: CapacityEstimate,
    *,
    throughput_rps: float | None,
    ready_pods: int,
    queue_depth: float | None,
    queue_saturated_per_pod: float = 1.0,
) -> CapacityEstimate:
    """Fold in one observation when the pods are saturated (queue per pod at or above
    ``queue_saturated_per_pod``): only then is throughput per pod a capacity measurement.
    Missing inputs leave the estimate unchanged.

    Saturation is told by the queue only. A queue is what every engine reports when its
    batch is full (vLLM's and our worker's ``num_requests_waiting``, TGI's
    ``tgi_queue_size``), so it needs no threshold per model; a latency rule would need a
    latency signal (none is read today) and a per-model SLO to compare it with, and a
    request that waits is already the latency symptom. The queue is summed over the pods,
    so a queue on one badly balanced pod reads as all pods saturated (an underestimate,
    which only adds replicas, within ``min_ratio``)."""
    if throughput_rps is None or queue_depth is None or ready_pods <= 0:
        return est
    if queue_depth / ready_pods < queue_saturated_per_pod:
        return est
    observed = throughput_rps / ready_pods
    lo, hi = est.configured_rps * est.min_ratio, est.configured_rps * est.max_ratio
    observed = min(max(observed, lo), hi)
    new = (1 - est.alpha) * est.rps + est.alpha * observed
    return CapacityEstimate(
        est.configured_rps,
        min(max(new, lo), hi),
        est.samples + 1,
        est.min_ratio,
        est.max_ratio,
        est.alpha,
    )
