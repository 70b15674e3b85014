"""Where the project-local state lives: `.mltp/` (git-ignored), found the way git finds `.git/`."""

from __future__ import annotations

import os
from pathlib import Path


def mltp_home() -> Path:
    """`$MLTP_HOME`, else the nearest `.mltp/` in the current folder or a parent, else `./.mltp`."""
    if os.environ.get("MLTP_HOME"):
        return Path(os.environ["MLTP_HOME"]).expanduser().resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / ".mltp").is_dir():
            return folder / ".mltp"
    return cwd / ".mltp"
