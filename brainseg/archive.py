"""A zip of one case's files (how a case is often shared, and what a browser drop of a folder cannot be):
its image members, read in memory and bounded before anything is inflated."""
from __future__ import annotations

import io
import zipfile

from brainseg.decode import MAX_BYTES
from brainseg.errors import InputError
from brainseg.naming import SUFFIXES, is_hidden

MAX_MEMBERS = 64  # image files in one archive: a case has four scans and a segmentation, a few derived maps
MAX_ARCHIVE_BYTES = MAX_BYTES  # all its image members inflated: what one file may inflate to


def is_zip_name(name: str) -> bool:
    return name.lower().endswith(".zip")


def image_members(data: bytes, name: str) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each .nii / .nii.gz / .npy file in a zip, sorted by name; folders inside are
    flattened, hidden files and the __MACOSX metadata a Mac's zip adds are skipped.

    Raises InputError naming the archive when it is not a zip, is encrypted, holds no image file, holds two
    of one name, or holds more than MAX_MEMBERS of them or MAX_ARCHIVE_BYTES once inflated (checked on the
    sizes its directory declares, which reading then holds it to).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception:  # zipfile raises several types for damaged archives (BadZipFile, ValueError, ...)
        raise InputError(f"{name}: not a readable zip file (damaged or truncated); expected a .zip of one case's "
                         f".nii / .nii.gz files, or the files themselves") from None
    with archive:
        wanted = [info for info in archive.infolist()
                  if not info.is_dir() and not any(is_hidden(part) for part in _parts(info.filename))
                  and info.filename.lower().endswith(SUFFIXES)]
        if not wanted:
            held = [info.filename for info in archive.infolist() if not info.is_dir()][:5]
            raise InputError(f"{name}: holds no .nii, .nii.gz or .npy file" + (f" (it holds {', '.join(held)})" if held else
                             " (it is empty)") + "; expected a zip of one case's scans")
        if len(wanted) > MAX_MEMBERS:
            raise InputError(f"{name}: holds {len(wanted)} image files; expected one case's (at most {MAX_MEMBERS}): "
                             f"segment a cohort from its extracted folder with brainseg segment")
        inflated = sum(info.file_size for info in wanted)
        if inflated > MAX_ARCHIVE_BYTES:
            raise InputError(f"{name}: its image files inflate to {inflated / 1024**3:.1f} GB; expected one case's "
                             f"(at most {MAX_ARCHIVE_BYTES / 1024**3:.0f} GB)")
        members: dict[str, bytes] = {}
        for info in sorted(wanted, key=lambda i: _parts(i.filename)[-1]):
            base = _parts(info.filename)[-1]
            if base in members:
                raise InputError(f"{name}: holds two files named {base}; expected one case's files")
            if info.flag_bits & 0x1:
                raise InputError(f"{name}: {info.filename} is encrypted; expected an unencrypted zip")
            try:
                members[base] = archive.read(info)
            except Exception as exc:  # bad CRC, a damaged deflate stream (zlib.error), an unsupported method...
                raise InputError(f"{name}: {info.filename} cannot be read from it ({type(exc).__name__}: {exc}); "
                                 f"expected an intact zip (deflate or store)") from None
    return list(members.items())


def _parts(member: str) -> list[str]:
    """A member's path, split at either separator: zips made on Windows may hold backslashes."""
    return member.replace("\\", "/").split("/")
