"""The ``surgecast`` command line: one module per sub-command in ``autoscaler/commands``.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Adding a command is one module and one line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["COMMANDS", "build_parser", "main"]

#: sub-command modules, in the order ``--help`` lists them
COMMANDS: tuple[str, ...] = (
    "autoscaler.commands.demo",
    "autoscaler.commands.forecast",
    "autoscaler.commands.backtest",
    "autoscaler.commands.dry_run",
    "autoscaler.commands.history",
    "autoscaler.commands.run",
)


def _load_commands() -> list[ModuleType]:
    mods = []
    for name in COMMANDS:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            # a command whose module is not written yet, or whose optional extra is not
            # installed, is left out of the CLI rather than breaking every other command
            if exc.name and (exc.name == name or not exc.name.startswith("autoscaler")):
                continue
            raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="surgecast",
        description="Predictive autoscaler for GPU LLM-inference workers on Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in _load_commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``surgecast`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = int(args._run(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return rc
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `surgecast dry-run | head`: the reader has what it wanted
        from autoscaler.commands._output import silence_stdout

        silence_stdout()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
