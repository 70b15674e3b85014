"""The trainer's own code as a Lambda zip: exactly the `mltp` modules the trainer imports, nothing else.

The module set comes from a static walk of the import statements, starting at the trainer's entry
points. Reading the source rather than importing it also finds imports made inside functions, which a
look at `sys.modules` after an import would miss. Third-party packages are not in the zip: the image
installs them from `deployments/trainer-requirements.txt`.
"""

from __future__ import annotations

import ast
import io
import zipfile
from importlib.util import resolve_name
from pathlib import Path

import mltp

ENTRY_POINTS = ("mltp.trainer.handler", "mltp.trainer.__main__")
# Zip timestamps cannot predate 1980; a fixed one makes equal code give an equal CodeSha256.
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SOURCE_ROOT = Path(mltp.__file__).resolve().parent.parent


def trainer_files() -> list[str]:
    """Paths (relative to the directory holding `mltp/`, sorted) of every module the trainer needs."""
    found: set[str] = set()
    pending = list(ENTRY_POINTS)
    while pending:
        module = pending.pop()
        if module in found:
            continue
        found.add(module)
        parent = module.rpartition(".")[0]
        if parent:
            pending.append(parent)
        pending.extend(_imported_modules(module))
    return sorted(_source(module).relative_to(_SOURCE_ROOT).as_posix() for module in found)


def trainer_zip() -> bytes:
    """A deterministic zip of `trainer_files()`: sorted entries, fixed timestamps and permissions."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in trainer_files():
            entry = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.create_system = 3  # Unix, so the permission bits below are honoured
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, (_SOURCE_ROOT / name).read_bytes())
    return buffer.getvalue()


def _imported_modules(module: str) -> list[str]:
    """First-party modules named by the import statements of `module`, wherever they stand."""
    path = _source(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _first_party(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            base = (
                resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
            )
            if base is None or not _first_party(base):
                continue
            found.append(base)
            # `from mltp.trainer import runner` imports a module; `from mltp.aws import error_code` does not.
            found += [f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}")]
    return found


def _first_party(module: str) -> bool:
    return module == "mltp" or module.startswith("mltp.")


def _is_module(module: str) -> bool:
    return _source(module).is_file()


def _source(module: str) -> Path:
    relative = Path(*module.split("."))
    package = _SOURCE_ROOT / relative / "__init__.py"
    return package if package.is_file() else _SOURCE_ROOT / relative.with_suffix(".py")
