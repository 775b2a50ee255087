"""Flags of the trace commands that used to crash, be silently ignored or fall back to a
default: each is now one line on stderr and exit 2, before any simulation."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.cli import main


def _pa(tmp_path: Path, capacity_rps: float) -> Path:
    doc = {"apiVersion": "surgecast.io/v1alpha1", "kind": "PredictiveAutoscaler",
           "metadata": {"name": "w", "namespace": "llm"},
           "spec": {"scaleTargetRef": {"name": "w"}, "minReplicas": 1, "maxReplicas": 40,
                    "capacity": {"requestsPerSecondPerReplica": capacity_rps},
                    "forecast": {"model": "seasonal_naive"}}}
    p = tmp_path / "pa.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the scenario (the oracle's bound) or a simulation is started."""
    import autoscaler.core.scenario as scenario

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("the expensive work started before the flags were checked")

    monkeypatch.setattr(scenario, "oracle_gpu_hours", boom)
    monkeypatch.setattr(scenario, "compare", boom)


@pytest.mark.parametrize(("argv", "message"), [
    # OverflowError in round(inf * 86400 / step)
    (["backtest", "--days", "inf"], "--days must be a finite number > 0, got inf"),
    (["dry-run", "--days", "inf"], "--days must be a finite number > 0, got inf"),
    (["backtest", "--days", "nan"], "--days must be a finite number > 0, got nan"),
    # silently capped at the simulator's 400
    (["backtest", "--peak-replicas", "401"], "--peak-replicas must be <= 400"),
    # millions of simulation steps
    (["backtest", "--step", "1ms"], "--step must be at least 1 s, got 1ms"),
    (["dry-run", "--step", "0.5s"], "--step must be at least 1 s, got 0.5s"),
    # empty values used to fall back to the defaults
    (["backtest", "--cold-start", ""], "--cold-start: empty duration"),
    (["dry-run", "--warm-promotion", ""], "--warm-promotion: empty duration"),
    (["backtest", "--model", ""], "unknown model ''"),
    (["backtest", "--out", ""], "--out is empty"),
    (["forecast", "--model", ",,"], "--model ',,' names no model"),
    (["forecast", "--model", ""], "--model '' names no model"),
    # live-only flags were ignored in a trace replay
    (["dry-run", "--once"], "--once is for the live mode"),
    (["dry-run", "--ticks", "3"], "--ticks is for the live mode"),
    (["dry-run", "--replicas", "3"], "--replicas is for the live mode"),
    (["dry-run", "--no-cluster"], "--no-cluster is for the live mode"),
])
def test_bad_flag_is_one_line_exit_2_before_the_run(
    wiki_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str,
) -> None:
    _no_simulation(monkeypatch)
    cmd, rest = argv[0], argv[1:]
    extra = ["--horizon", "24h"] if cmd == "forecast" else []
    out = [] if "--out" in rest else ["--out", str(tmp_path / "o")]
    if cmd == "dry-run":
        out = []
    rc = main([cmd, "--trace", str(wiki_slice), *extra, *out, *rest])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", ["backtest", "dry-run"])
def test_a_capacity_in_the_wrong_unit_is_refused_before_the_oracle(
    wiki_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, cmd: str,
) -> None:
    # 0.001 req/s per replica: 3 million replicas, and the oracle's bound looped over each
    # replica slot (backtest seemed to hang)
    _no_simulation(monkeypatch)
    out = ["--out", str(tmp_path / "o")] if cmd == "backtest" else []
    rc = main([cmd, "--trace", str(wiki_slice), "--config", str(_pa(tmp_path, 0.001)), *out])
    err = capsys.readouterr().err
    assert rc == 2
    assert "needs 3,070,445 replicas at capacity.requestsPerSecondPerReplica 0.001" in err
    assert "more than 10 x maxReplicas (40)" in err
    assert len(err.strip().splitlines()) == 1


def test_a_capacity_short_of_max_replicas_warns_before_the_run(
    wiki_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 15 req/s per replica: the peak needs 205 > 40 replicas; a warning, then the run
    _no_simulation(monkeypatch)
    with pytest.raises(AssertionError, match="expensive work"):
        main(["backtest", "--trace", str(wiki_slice), "--config", str(_pa(tmp_path, 15.0)),
              "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "warning: the trace's peak needs 205 replicas" in err


@pytest.mark.parametrize("cmd", ["backtest", "dry-run", "forecast", "demo"])
def test_a_mostly_missing_trace_is_a_warning(
    wiki_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, cmd: str,
) -> None:
    # two hours kept of every six: the replay used to interpolate 64 % of it silently
    import autoscaler.commands.forecast as forecast_cmd
    import forecasting.backtest

    lines = wiki_slice.read_text().splitlines()
    sparse = tmp_path / "sparse.csv"
    kept = [ln for h, ln in enumerate(lines[1:]) if h % 6 in (0, 1)]
    sparse.write_text("\n".join([lines[0], *kept]) + "\n")
    _no_simulation(monkeypatch)

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("the expensive work started")

    monkeypatch.setattr(forecasting.backtest, "cross_validation", boom)
    scored = ["--horizon", "6h", "--origins", "1", "--out", str(tmp_path / "o")]
    extra = {"backtest": ["--out", str(tmp_path / "o")], "forecast": scored, "demo": scored,
             "dry-run": []}[cmd]
    trace = ["--trace", str(sparse)]
    if cmd == "demo":  # the whole embedded trace is scored: make it the sparse one
        load = forecast_cmd.load_series
        monkeypatch.setattr(forecast_cmd, "load_series",
                            lambda _path, column, step: load(sparse, column, step))
        trace = []
    with pytest.raises(AssertionError, match="expensive work"):
        main([cmd, *trace, *extra])
    err = capsys.readouterr().err
    assert f"surgecast {cmd}: warning: 28 of 44 buckets have no value (64 %)" in err, err


def _token_file(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``--prometheus-token-file`` that cannot be used: missing, a folder, a FIFO (read on
    every query, it would block) or unreadable (mode 0; for root, who reads it anyway, the
    CLI's ``open`` of it is denied as it would be)."""
    path = tmp_path / f"{kind}.token"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_text(" \n")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "unreadable":
        path.write_text("secret")
        path.chmod(0)
        if os.geteuid() == 0:
            import builtins

            import autoscaler.commands.live

            def denied(file: object, *args: Any, **kwargs: Any) -> Any:
                if str(file) == str(path):
                    raise PermissionError(errno.EACCES, "Permission denied", str(file))
                return builtins.open(file, *args, **kwargs)  # type: ignore[call-overload]

            monkeypatch.setattr(autoscaler.commands.live, "open", denied, raising=False)
    return path


def _bare_spec(tmp_path: Path) -> Path:
    """A minimal PredictiveAutoscaler spec file."""
    spec = tmp_path / "pa.yaml"
    spec.write_text(yaml.safe_dump({"scaleTargetRef": {"name": "w"},
                                    "capacity": {"requestsPerSecondPerReplica": 1.0}}))
    return spec


@contextlib.contextmanager
def _unqueried_prometheus() -> Iterator[str]:
    """The URL of a socket that listens but never answers; fails the test if the command
    connected to it (a query that should not have been sent)."""
    with socket.socket() as prometheus:
        prometheus.bind(("127.0.0.1", 0))
        prometheus.listen(8)
        yield f"http://127.0.0.1:{prometheus.getsockname()[1]}"
        prometheus.setblocking(False)
        try:
            conn, _addr = prometheus.accept()
        except BlockingIOError:
            return  # nobody connected
        conn.close()
        pytest.fail("a query reached Prometheus before the flags were checked")


_TOKEN_ERRORS = {"missing": "not found", "folder": "is not a file", "fifo": "is not a file",
                 "unreadable": "cannot read it: Permission denied",
                 "empty": "holds no token (requests would go without Authorization)"}


@pytest.mark.parametrize("cmd", ["history", "dry-run", "run"])
@pytest.mark.parametrize("kind", ["missing", "folder", "fifo", "unreadable", "empty"])
def test_an_unusable_token_file_is_refused_before_any_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    cmd: str, kind: str,
) -> None:
    # it used to be first read by the first query: history said "cannot read bearer token
    # file" without naming the flag, dry-run printed NoDecision lines and exited 0, run went
    # on to the cluster and the controller (whose every query would fail), and a FIFO
    # blocked the first query for good
    token = _token_file(tmp_path, kind, monkeypatch)
    extra = {"history": ["--out", str(tmp_path / "d.csv")],
             "dry-run": ["--once", "--no-cluster"],
             "run": ["--kubeconfig", str(tmp_path / "no-kubeconfig")]}[cmd]
    with _unqueried_prometheus() as url:
        rc = main([cmd, "--prometheus", url, "--prometheus-token-file", str(token),
                   "--config", str(_bare_spec(tmp_path)), "--target", "llm/pa", *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"--prometheus-token-file {token}: {_TOKEN_ERRORS[kind]}" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("flag", "value"), [
    ("--column", "rate_rps"), ("--days", "1"), ("--step", "1m"), ("--slo", "1s"),
    ("--peak-replicas", "10"), ("--cold-start", "60s"), ("--warm-promotion", "2s"),
    ("--model", "ets"), ("--every", "5"), ("--limit", "3"),
    # the trace replay's defaults, given: refused all the same
    ("--days", "2"), ("--step", "15s"), ("--column", "requests"), ("--every", "1"),
])
def test_trace_flags_are_refused_by_the_live_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str,
) -> None:
    # they used to be ignored: the live mode reads the spec and Prometheus, not a trace
    with _unqueried_prometheus() as url:
        rc = main(["dry-run", "--prometheus", url, "--target", "llm/pa", "--config",
                   str(_bare_spec(tmp_path)), "--no-cluster", "--once",
                   "--prometheus-timeout", "0.5", flag, value])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"{flag} is for a trace replay" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
