"""The commands' files and pipes: outputs replaced whole or not at all, unwritable outputs and
unreadable traces as one-line usage errors, ``| head`` ends quietly."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from autoscaler.cli import main
from autoscaler.commands._output import write_text_atomic
from autoscaler.commands.forecast import UsageError
from autoscaler.commands.history import write_trace
from forecasting.series import Series

REPO = Path(__file__).resolve().parents[2]


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, n_chars: int) -> None:
    """Every ``Path.write_text`` writes ``n_chars`` characters, then fails with ENOSPC."""

    def write_text(self: Path, data: str, *args: object, **kwargs: object) -> int:
        with open(self, "w", encoding="utf-8") as fh:
            fh.write(data[:n_chars])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", write_text)


def _one_line(err: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_history_out_survives_a_full_disk(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # it used to truncate demand.csv to whatever fitted before the disk filled
    out = tmp_path / "demand.csv"
    out.write_text("timestamp,requests,rate_rps\n2026-01-01T00:00:00Z,60,1\n")
    before = out.read_bytes()
    series = Series(start_s=1.7e9, step_s=60, values=np.arange(100.0), kind="rate")
    _disk_full_after(monkeypatch, 40)
    with pytest.raises(UsageError, match=r"cannot write .*demand\.csv: No space left"):
        write_trace(series, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demand.csv"]  # no temp file left


def test_atomic_write_replaces_and_keeps_the_mode(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    out.write_text("old")
    out.chmod(0o640)
    write_text_atomic(out, "new")
    assert out.read_text() == "new" and (out.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


@pytest.mark.parametrize(("cmd", "target"), [
    (["backtest", "--policies", "static,oracle"], "summary.json"),
    (["backtest", "--policies", "static,oracle"], "capacity.png"),
    (["forecast", "--model", "seasonal_naive", "--horizon", "6h", "--origins", "1"],
     "metrics.json"),
])
def test_an_unwritable_output_is_one_line_exit_2(
    wiki_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    cmd: list[str], target: str,
) -> None:
    # a folder where the file should go: os.replace fails even for root; it used to end in
    # an IsADirectoryError traceback after the whole run
    out = tmp_path / "o"
    (out / target).mkdir(parents=True)
    rc = main([*cmd, "--trace", str(wiki_slice), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"cannot write {out / target}" in err
    _one_line(err)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left


def test_an_out_that_is_a_file_is_refused_before_the_run(
    wiki_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    out.write_text("keep me")
    assert main(["backtest", "--trace", str(wiki_slice), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} exists and is not a folder" in err
    _one_line(err)
    assert out.read_text() == "keep me"


def test_a_trace_that_is_not_a_readable_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path = tmp_path / "sock.csv"
    sock.bind(str(sock_path))
    cases = [(tmp_path, "is a folder, not a file"),
             (sock_path, "is a socket, not a file or a pipe")]
    for path, message in cases:
        assert main(["backtest", "--trace", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert message in err, err
        _one_line(err)
    unreadable = tmp_path / "x.csv"
    unreadable.write_text("timestamp,requests\n0,1\n")

    def denied(*_a: object, **_k: object) -> Series:
        raise PermissionError(errno.EACCES, "Permission denied", str(unreadable))

    monkeypatch.setattr(Series, "from_csv", denied)
    assert main(["forecast", "--trace", str(unreadable), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"cannot read trace {unreadable}: Permission denied" in err
    _one_line(err)
    sock.close()


def _feed_fifo(path: Path, data: bytes, timeout_s: float = 30.0) -> threading.Thread:
    """A thread that writes ``data`` into the FIFO ``path`` once a reader has opened it,
    then closes it; it gives up after ``timeout_s`` when no reader comes (no hung test)."""

    def write() -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:  # non-blocking: ENXIO until the other end is open for reading
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    return
                time.sleep(0.01)
        os.set_blocking(fd, True)
        try:
            os.write(fd, data)
        except BrokenPipeError:
            pass  # the reader gave up
        finally:
            os.close(fd)

    th = threading.Thread(target=write, daemon=True)
    th.start()
    return th


def test_a_trace_from_a_fifo_is_read_once(
    wiki_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # `--trace <(zcat trace.csv.gz)`: a pipe can be read once, and that is all a trace needs
    fifo = tmp_path / "trace.csv"
    os.mkfifo(fifo)
    writer = _feed_fifo(fifo, wiki_slice.read_bytes())
    out = tmp_path / "o"
    rc = main(["forecast", "--trace", str(fifo), "--model", "seasonal_naive", "--horizon",
               "6h", "--origins", "1", "--out", str(out)])
    err = capsys.readouterr().err
    writer.join(timeout=10)
    assert rc == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trace"] == "trace" and metrics["models"]["seasonal_naive"]["n_ok"] == 1
    # an error found after the read names the line from the bytes read: no second read
    # (which would wait for a writer that is gone)
    writer = _feed_fifo(fifo, b"timestamp,requests\n0,1\n60,caf\xe9\n")
    assert main(["forecast", "--trace", str(fifo), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    writer.join(timeout=10)
    assert f"{fifo}:3: not UTF-8 text (byte 0xe9)" in err
    _one_line(err)


def test_a_trace_on_stdin_is_read(wiki_slice: Path, tmp_path: Path) -> None:
    # /dev/stdin is the pipe the shell feeds: `zcat t.csv.gz | surgecast forecast --trace
    # /dev/stdin`
    out = tmp_path / "o"
    proc = subprocess.run(
        [sys.executable, "-m", "autoscaler.cli", "forecast", "--trace", "/dev/stdin",
         "--model", "seasonal_naive", "--horizon", "6h", "--origins", "1", "--out", str(out)],
        input=wiki_slice.read_bytes(), capture_output=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads((out / "metrics.json").read_text())["h"] == 6


def test_backtest_into_head_exits_0_and_still_writes(wiki_slice: Path, tmp_path: Path) -> None:
    # it used to exit 1 with nothing on stderr (rich's broken-pipe exit), files unwritten
    out = tmp_path / "o"
    cmd = (f"{sys.executable} -m autoscaler.cli backtest --trace {wiki_slice} "
           f"--policies static,oracle --out {out} | head -c 1; exit ${{PIPESTATUS[0]}}")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (out / "summary.json").is_file()


def test_backtest_on_a_terminal_shows_progress_within_a_simulation(
    wiki_slice: Path, tmp_path: Path
) -> None:
    import pty

    # stderr is a terminal (a pty), so rich draws the bar there; stdout stays a pipe
    primary, secondary = pty.openpty()
    cmd = [sys.executable, "-m", "autoscaler.cli", "backtest", "--trace", str(wiki_slice),
           "--policies", "hpa,static", "--out", str(tmp_path / "o")]
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=secondary, cwd=REPO, env=env)
    os.close(secondary)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=120)
    os.close(primary)
    assert proc.returncode == 0
    err = b"".join(chunks).decode(errors="replace")
    assert "simulating hpa(gpu 70%) (1/2)" in err and "simulating static peak (2/2)" in err
    percents = {int(m) for m in re.findall(r"(\d+) %", err)}
    assert any(0 < p < 50 for p in percents), err[-400:]  # moved within the first policy
    assert "static peak" in out.decode()  # the table itself went to stdout
