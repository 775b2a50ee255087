"""Fixtures for the controller tests: the fake API server and a clock the test moves."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# fake_kube lives beside the adapter tests; importable whatever the collection order
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "adapters"))

from fake_kube import FakeKube


class FakeClock:
    """Seconds since the epoch that only move when the test says so."""

    def __init__(self, start_s: float = 1_800_000_000.25) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    """A fresh fake API server."""
    with FakeKube() as fk:
        yield fk


@pytest.fixture
def clock() -> FakeClock:
    """A shared fake clock for the electors of one test."""
    return FakeClock()
