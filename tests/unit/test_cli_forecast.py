"""``surgecast forecast`` and ``surgecast demo``: outputs, JSON sanity, one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler.cli import main

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_outputs(out: Path, models: set[str]) -> dict:
    png = out / "fan_chart.png"
    assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    data = json.loads((out / "metrics.json").read_text())
    assert set(data["models"]) == models
    for name, m in data["models"].items():
        assert m["n_ok"] == m["n_origins"] > 0, name
        assert m["mae"] > 0 and m["rmse"] >= m["mae"] and 0 < m["smape"] < 200
        assert 0 <= m["coverage"]["0.9"] <= 1 and m["pinball_mean"] > 0
        assert m["fit_s"] >= 0 and m["predict_s"] >= 0
    assert data["models"]["seasonal_naive"]["relative_mae"] == pytest.approx(1.0)
    return data


def test_forecast_in_process(traces_dir: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "slice.csv"
    lines = (traces_dir / "servegen_language_m_small.csv").read_text().splitlines()
    trace.write_text("\n".join(lines[: 1 + 144 * 6]) + "\n")
    out = tmp_path / "out"
    rc = main(["forecast", "--trace", str(trace), "--model", "ets", "--horizon", "1h",
               "--origins", "2", "--refit-every", "0", "--out", str(out)])
    assert rc == 0
    data = _check_outputs(out, {"seasonal_naive", "ets"})
    assert data["h"] == 6 and data["step_s"] == 600 and len(data["origins_s"]) == 2
    text = capsys.readouterr().out
    assert "ets" in text and "rel MAE" in text and "metrics.json" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trace", "/nonexistent/x.csv"], "trace file not found"),
        (["--column", "nope"], "no 'nope' column"),
        (["--horizon", "30x"], "--horizon: bad duration"),
        (["--horizon", "10d"], "too little history for the horizon"),
        (["--step", "7s"], "--step"),
        (["--model", "nope"], "unknown model 'nope'"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    traces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    argv: list[str], message: str,
) -> None:
    base = {"--trace": str(traces_dir / "wikipedia_en_2016_01.csv"), "--horizon": "24h",
            "--out": str(tmp_path)}
    args = dict(base)
    args.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    flat = ["forecast"] + [x for kv in args.items() for x in kv]
    rc = main(flat)
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_demo_as_a_subprocess(tmp_path: Path) -> None:
    """The console script end to end on the embedded slice (seasonal naive + ets only)."""
    exe = Path(sys.executable).parent / "surgecast"
    cmd = [str(exe) if exe.exists() else str(REPO / ".venv" / "bin" / "surgecast"), "demo",
           "--model", "ets", "--origins", "2", "--refit-every", "0",
           "--out", str(tmp_path / "demo")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "embedded trace wikipedia_en_2016_01.csv" in proc.stdout
    data = _check_outputs(tmp_path / "demo", {"seasonal_naive", "ets"})
    assert data["h"] == 24 and data["trace"] == "wikipedia_en_2016_01"
    rel = data["models"]["ets"]["relative_mae"]
    assert rel is not None and math.isfinite(rel) and 0 < rel < 2
