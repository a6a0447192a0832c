"""Writing files so that a failure never leaves a partial file at the destination."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from brainseg.errors import InputError


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place.

    Args:
        suffix: the temporary file's ending, for writers that choose a format by name (".nii.gz").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def check_can_create(paths: Iterable[str | Path]) -> None:
    """Refuse, before any work, output paths whose folder cannot exist: an existing file stands where
    a folder would go, or the output is itself a folder.

    Raises InputError naming the path in the way.
    """
    for path in map(Path, paths):
        if path.is_dir():
            raise InputError(f"{path}: is a folder; expected a file name to write")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise InputError(f"{parent}: is a file, not a folder; cannot write {path} inside it")
                break
