"""Writing files so that a failure never leaves a partial file at the destination."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from brainseg.errors import InputError


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place.

    Args:
        suffix: the temporary file's ending, for writers that choose a format by name (".nii.gz").
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=suffix)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    except OSError as exc:  # name the destination the user chose, not the temporary file
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def check_can_write(folder: str | Path) -> None:
    """Create ``folder`` and write a file in it, before long work whose results go there.

    Raises OSError naming the folder (permission denied, read-only file system, full disk).
    """
    probe = Path(folder) / ".brainseg-write-check"
    try:
        atomic_write(probe, lambda tmp: Path(tmp).write_bytes(b"ok"))
        probe.unlink()
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror}; expected a folder the results can be written to", str(folder)) from exc


def check_can_create(paths: Iterable[str | Path], probe: bool = True) -> None:
    """Refuse, before any work, output paths that cannot be written: an existing file stands where a
    folder would go, the output is itself a folder, or the nearest existing folder takes no new file
    (permissions, a read-only file system; tried when ``probe``).

    Raises InputError naming the path in the way.
    """
    for path in map(Path, paths):
        if path.is_dir():
            raise InputError(f"{path}: is a folder; expected a file name to write")
        for parent in path.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise InputError(f"{parent}: is a file, not a folder; cannot write {path} inside it")
                if probe:
                    try:
                        fd, trial = tempfile.mkstemp(dir=parent, prefix=".brainseg-write-check")
                        os.close(fd)
                        os.remove(trial)
                    except OSError as exc:
                        raise InputError(f"{path}: cannot write in {parent} ({exc.strerror}); choose another output path") from None
                break


@contextmanager
def temporary_copy(data: bytes, suffix: str) -> Iterator[Path]:
    """``data`` in a private temporary file ending in ``suffix``, for readers that take only a path and choose
    the format by its ending (SimpleITK); the file is removed on leaving, whatever happens inside."""
    fd, name = tempfile.mkstemp(prefix="brainseg-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        yield Path(name)
    finally:
        if os.path.exists(name):
            os.remove(name)
