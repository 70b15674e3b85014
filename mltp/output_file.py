"""Writing a command's output file so that a failure never leaves part of it behind: a regular file is
written beside its destination under a temporary name and renamed into place; what is not a regular file
(a terminal, /dev/stdout, a FIFO) cannot be renamed onto and is written directly.

No pandas here: the CLI imports this up front."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from mltp.errors import ConfigError, MltpError


class OutputWriteError(MltpError):
    """The system refused to write the output (disk full, no permission, read-only file system)."""


def check_destination(path: Path) -> None:
    """Refuse, before any work, a destination that can never be written (the user's to fix)."""
    if path.is_dir():
        raise ConfigError(
            f"cannot write {path}: it is a directory: name a file, e.g. -o {path / 'predictions.csv'}",
            setting="--output",
        )
    if not path.parent.is_dir():
        raise ConfigError(
            f"cannot write {path}: the folder {path.parent} does not exist: create it or choose another -o",
            setting="--output",
        )


def write_output(path: Path, write: Callable[[TextIO], None]) -> None:
    """Call `write` with a text handle onto `path`; a failure is a one-line error."""
    try:
        mode = _mode(path)
        if mode is None or stat.S_ISREG(mode):
            _replace(path, write, mode)
        else:
            with open(path, "w", encoding="utf-8", newline="") as handle:
                write(handle)
    except (IsADirectoryError, NotADirectoryError, FileNotFoundError) as error:
        raise ConfigError(
            f"cannot write {path}: {error.strerror}: give -o the path of a file in an existing folder",
            setting="--output",
        ) from error
    except OSError as error:
        raise OutputWriteError(
            f"cannot write {path}: {error.strerror or error}: free space or fix the permissions there, "
            "or write elsewhere with -o"
        ) from error


def _mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode
    except FileNotFoundError:
        return None


def _replace(path: Path, write: Callable[[TextIO], None], mode: int | None) -> None:
    target = Path(os.path.realpath(path))  # through a symlink: the link keeps naming the file
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            if mode is not None:  # a replaced file keeps its permissions
                os.fchmod(handle.fileno(), stat.S_IMODE(mode))
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
