"""``surgecast demo``: the forecast backtest on the trace slice shipped in the package.

At this stage the demo is a rolling-origin backtest of ``auto`` (and the seasonal-naive
reference) on one month of hourly English-Wikipedia requests
(``forecasting/data/wikipedia_en_2016_01.csv``, see ``forecasting/data/ATTRIBUTION.md``),
24 hours ahead at 3 daily origins (fitted once, then updated), with the same table,
fan chart and JSON as ``surgecast forecast``.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources

from autoscaler.commands import forecast

NAME = "demo"
HELP = "Backtest forecasters on the embedded Wikipedia trace slice (no set-up needed)."
TRACE = "wikipedia_en_2016_01.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``surgecast demo`` (those of ``forecast`` minus ``--trace``)."""
    forecast.add_backtest_arguments(
        parser, horizon="24h", origins=3, out="surgecast-demo", refit=0
    )


def run(args: argparse.Namespace) -> int:
    """Run the backtest on the embedded slice; 2 on bad options."""
    try:
        with resources.as_file(resources.files("forecasting") / "data" / TRACE) as path:
            print(f"surgecast demo: embedded trace {TRACE} (see forecasting/data/ATTRIBUTION.md)")
            series = forecast.load_series(path, args.column, args.step)
        return forecast.backtest_and_report(series, args)
    except forecast.UsageError as exc:
        print(f"surgecast {NAME}: error: {exc}", file=sys.stderr)
        return 2
