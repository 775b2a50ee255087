"""benchmarks/cb_compare.py: its pure helpers, and one tiny end-to-end run (correctness
only; no timing assertions)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cb_compare", ROOT / "benchmarks" / "cb_compare.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_cb_settings_hold_every_request_and_one_prefill(bench: ModuleType) -> None:
    s = bench.cb_settings([23, 24] * 8, 64)
    assert s["page_size"] == bench.PAGE_SIZE == 32
    assert s["num_blocks"] == 2 * 16 * 3  # 87 and 88 tokens need 3 pages of 32 each
    assert s["max_batch_tokens"] == 512  # 376 prompt tokens in one forward
    assert s["max_requests_per_batch"] == 16
    assert s["allow_block_sharing"] is False
    assert bench.cb_settings([5], 4)["max_batch_tokens"] == 256  # the floor


def test_identity_counts_equal_sequences_and_where_others_differ(bench: ModuleType) -> None:
    same, first = bench.identity([[1, 2, 3], [1, 2, 3], [4]], [[1, 2, 3], [1, 9, 3], [4, 5]])
    assert same == 1
    assert first == [1, 1]  # a differing token, then a prefix of the other


def test_rotated_lets_each_side_lead_in_turn(bench: ModuleType) -> None:
    sides = ["a", "b", "c"]
    assert [bench.rotated(sides, r)[0] for r in range(4)] == ["a", "b", "c", "a"]
    assert sorted(bench.rotated(sides, 2)) == sides


def test_spread(bench: ModuleType) -> None:
    sp = bench.spread([3.0, 1.0, 2.0])
    assert (sp.median, sp.low, sp.high) == (2.0, 1.0, 3.0)


def test_compare_runs_end_to_end_on_the_tiny_model(
    bench: ModuleType, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench.compare(str(tiny_model_dir), n=4, max_tokens=4, threads=1, runs=1)
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| own") or ln.startswith("| cb")]
    assert len(rows) == 3
    assert all(ln.split(" | ")[1] == "16" for ln in rows)  # 4 prompts x 4 tokens each side
    assert "WARNING" not in out
    assert out.count("sequences identical") == 2
