"""Output files of the commands: written whole or not at all.

Each file is written to a temporary file in the target's folder and moved over the target
with :func:`os.replace` only once complete, so a failed write (disk full, a killed run)
leaves the previous file as it was and no half-written one; the temporary file is removed
on failure. An ``OSError`` becomes a :class:`~autoscaler.commands.forecast.UsageError`
naming the file (one line, exit 2).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoscaler.commands.forecast import UsageError

__all__ = [
    "check_writable_dir", "silence_stdout", "stdout_console", "write_atomic", "write_text_atomic",
]


def silence_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone (``surgecast backtest | head``), so
    later prints and the interpreter's final flush neither fail nor print (Python's
    documented recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # stdout is not a real file (a test's capture)


def stdout_console() -> Any:
    """A rich console on stdout (150 columns when not a terminal) that, when the pipe's
    reader goes away, stops printing and lets the command finish and write its files
    (rich's default exits with status 1 on the spot)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            silence_stdout()

    return _Console(width=None if sys.stdout.isatty() else 150)


def _mode_for(path: Path) -> int:
    """The mode the file gets: the existing target's, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it over ``path``.

    Raises:
        UsageError: the folder or the file cannot be written (``path`` is left untouched).
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_atomic` of a UTF-8 text."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_writable_dir(flag: str, folder: Path) -> None:
    """Create ``folder`` if needed and check it can take files, before any long run.

    Raises:
        UsageError: it cannot be created, is not a folder, or is not writable.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{flag} {folder} exists and is not a folder") from None
    except OSError as exc:
        raise UsageError(f"cannot create {flag} folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} folder {folder} is not writable")
