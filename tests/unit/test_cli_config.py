"""Config files the commands read: bad bytes and absurd values are ConfigErrors, which the
commands print as one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscaler.cli import main
from autoscaler.config import load_config
from autoscaler.errors import ConfigError

SPEC = "scaleTargetRef: {name: w}\nmaxReplicas: 40\ncapacity: {requestsPerSecondPerReplica: 5}\n"


def test_a_non_utf8_config_names_the_file(tmp_path: Path) -> None:
    # it used to escape load_config as a UnicodeDecodeError traceback
    p = tmp_path / "pa.yaml"
    p.write_bytes(SPEC.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"pa\.yaml: not UTF-8 text \(byte 0xe9 at offset"):
        load_config(p)


@pytest.mark.parametrize("history", ["99999999w", "91d"])
def test_forecast_history_is_capped_at_90_days(tmp_path: Path, history: str) -> None:
    # 99999999w overflowed datetime in the live dry-run's first refit
    p = tmp_path / "pa.yaml"
    p.write_text(SPEC + f"forecast: {{history: {history}}}\n")
    with pytest.raises(ConfigError, match=r"history must be at most 90d"):
        load_config(p)
    p.write_text(SPEC + "forecast: {history: 90d}\n")
    assert load_config(p).forecast.history == "90d"


def test_commands_print_a_bad_config_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "pa.yaml"
    p.write_bytes(b"\xff\xfe" + SPEC.encode("utf-16-le"))
    assert main(["history", "--prometheus", "http://127.0.0.1:1", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8 text" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
