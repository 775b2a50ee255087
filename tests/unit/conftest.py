"""Trace slices the CLI tests replay (written once per session, read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest


def _head(traces_dir: Path, name: str, rows: int, dest: Path) -> Path:
    """The header and the first ``rows`` rows of shared trace ``name``, written to ``dest``."""
    lines = (traces_dir / f"{name}.csv").read_text().splitlines()
    dest.write_text("\n".join(lines[: 1 + rows]) + "\n")
    return dest


@pytest.fixture(scope="session")
def wiki_slice(traces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first two days of hourly English-Wikipedia requests (peak 2149 req/s)."""
    return _head(traces_dir, "wikipedia_en_2016_01", 48,
                 tmp_path_factory.mktemp("wiki") / "wiki.csv")


@pytest.fixture(scope="session")
def conv_slice(traces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 50 minutes of the Azure LLM conversation trace (1 s buckets)."""
    return _head(traces_dir, "azure_llm_2023_conv", 3000,
                 tmp_path_factory.mktemp("conv") / "conv.csv")
