"""Fixtures shared by every test folder. Keep this small and general."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
