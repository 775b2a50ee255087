"""The controller's Prometheus preset for our worker queries names the worker really exports.

The two packages share no code (an import-linter contract), only metric names: this test is
what keeps them in step.
"""

from __future__ import annotations

import re

from autoscaler.adapters.prometheus import GPU_PRESETS, PRESETS
from model_worker.metrics import EQUIVALENTS, WorkerMetrics

_NAME = re.compile(r"\b(surgecast_worker_[a-z_]+)\b")


def _exported_names() -> set[str]:
    """Metric names in the worker's exposition (``# TYPE`` lines cover label-less families)."""
    text = WorkerMetrics("m", gpu=False).render().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


def test_worker_preset_names_are_exported_by_the_worker() -> None:
    rendered = PRESETS["surgecast"].render(selector="", gpu_selector="", window="1m")
    used = {n for q in rendered.values() for n in _NAME.findall(q)}
    assert used, "the worker preset queries no worker metric"
    missing = used - _exported_names()
    assert not missing, f"preset queries metrics the worker does not export: {sorted(missing)}"


def test_gpu_gauge_is_a_documented_worker_metric() -> None:
    # exported only where NVML finds a GPU (absent, not zero, without one), so check the
    # documented name list that the worker's collector is built from
    used = set(_NAME.findall(GPU_PRESETS["worker"]))
    assert used and used <= set(EQUIVALENTS)
