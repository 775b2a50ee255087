"""Fixtures shared by every test folder. Keep this small and general."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported lazily: worker tests need not import the forecasting core
    from forecasting.series import Series

REPO_ROOT = Path(__file__).resolve().parents[1]


def traces_path() -> Path:
    """Where the shared public traces live: ``$SURGECAST_TRACES`` or ``../shared/traces``."""
    env = os.environ.get("SURGECAST_TRACES")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "traces"


@pytest.fixture(scope="session")
def traces_dir() -> Path:
    """The shared traces folder; fails (not skips) when it is absent: CI has it beside the repo."""
    p = traces_path()
    if not (p / "wikipedia_en_2016_01.csv").is_file():
        pytest.fail(f"shared traces not found at {p}; set SURGECAST_TRACES")
    return p


@pytest.fixture(scope="session")
def load_trace(traces_dir: Path) -> Callable[[str], Series]:
    """``load_trace("wikipedia_en_2016_01")``: a shared trace as a :class:`Series` (cached)."""
    from forecasting.series import Series

    cache: dict[str, Series] = {}

    def load(name: str) -> Series:
        if name not in cache:
            cache[name] = Series.from_csv(traces_dir / f"{name}.csv")
        return cache[name]

    return load
