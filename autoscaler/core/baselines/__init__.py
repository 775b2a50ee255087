"""Baseline autoscalers for the simulator, one file each, registered by name.

``REGISTRY[name](capacity_rps_per_replica, **kwargs)`` builds one; ``static`` and ``oracle``
take their own arguments (see their modules).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from autoscaler.core.baselines.hpa import HpaAutoscaler
from autoscaler.core.baselines.keda import KedaAutoscaler
from autoscaler.core.baselines.kpa import KpaAutoscaler
from autoscaler.core.baselines.oracle import OracleAutoscaler, oracle_gpu_hours, oracle_replicas
from autoscaler.core.baselines.phpa import PhpaAutoscaler
from autoscaler.core.baselines.static import StaticAutoscaler

__all__ = [
    "REGISTRY",
    "HpaAutoscaler",
    "KedaAutoscaler",
    "KpaAutoscaler",
    "OracleAutoscaler",
    "PhpaAutoscaler",
    "StaticAutoscaler",
    "oracle_gpu_hours",
    "oracle_replicas",
]

REGISTRY: dict[str, Callable[..., Any]] = {
    "hpa": partial(HpaAutoscaler, metric="gpu_util"),
    "hpa_rps": partial(HpaAutoscaler, metric="rps"),
    "keda": KedaAutoscaler,
    "phpa": PhpaAutoscaler,
    "kpa": KpaAutoscaler,
    "static": StaticAutoscaler,
    "oracle": OracleAutoscaler,
}
