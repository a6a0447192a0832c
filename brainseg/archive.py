"""A zip of one case's files (how a case is often shared, and what a browser drop of a folder cannot be):
its image members, read in memory and bounded before anything is inflated."""
from __future__ import annotations

import io
import zipfile
from typing import NamedTuple

from brainseg import MODALITIES
from brainseg.decode import MAX_BYTES
from brainseg.errors import InputError
from brainseg.naming import FORMATS, SUFFIXES, case_stems, is_hidden, names_a_scan

MAX_MEMBERS = 64  # image files in one archive: a case has four scans and a segmentation, a few derived maps
MAX_ARCHIVE_BYTES = MAX_BYTES  # all its image members inflated: what one file may inflate to


def is_zip_name(name: str) -> bool:
    return name.lower().endswith(".zip")


class Member(NamedTuple):
    """One image file of a zip: its bytes, or why they cannot be read (one damaged file costs only itself)."""

    name: str  # its file name, without the folders inside the zip
    data: bytes | None
    error: str | None = None


def image_members(data: bytes, name: str) -> list[Member]:
    """Each image file (``naming.SUFFIXES``) in a zip, sorted by name; folders inside are flattened, hidden files
    and the __MACOSX metadata a Mac's zip adds are skipped.

    Raises InputError naming the archive when it is not a zip, holds no image file, holds two of one name,
    holds the scans of several cases, or holds more than MAX_MEMBERS image files or MAX_ARCHIVE_BYTES once
    inflated (checked on the sizes its directory declares, which reading then holds it to). An encrypted
    or damaged member is a Member with an error.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception:  # zipfile raises several types for damaged archives (BadZipFile, ValueError, ...)
        raise InputError(f"{name}: not a readable zip file (damaged or truncated); expected a .zip of one case's "
                         f"{FORMATS} files, or the files themselves") from None
    with archive:
        wanted = [info for info in archive.infolist()
                  if not info.is_dir() and not any(is_hidden(part) for part in _parts(info.filename))
                  and info.filename.lower().endswith(SUFFIXES)]
        if not wanted:
            held = [info.filename for info in archive.infolist() if not info.is_dir()][:5]
            raise InputError(f"{name}: holds no {FORMATS} file" + (f" (it holds {', '.join(held)})" if held else
                             " (it is empty)") + "; expected a zip of one case's scans")
        if len(wanted) > MAX_MEMBERS:
            raise InputError(f"{name}: holds {len(wanted)} image files; expected one case's (at most {MAX_MEMBERS}): "
                             f"segment a cohort from its extracted folder with brainseg segment")
        inflated = sum(info.file_size for info in wanted)
        if inflated > MAX_ARCHIVE_BYTES:
            raise InputError(f"{name}: its image files inflate to {inflated / 1024**3:.1f} GB; expected one case's "
                             f"(at most {MAX_ARCHIVE_BYTES / 1024**3:.0f} GB)")
        by_name = {}
        for info in wanted:
            base = _parts(info.filename)[-1]
            if base in by_name:
                raise InputError(f"{name}: holds two files named {base}; expected one case's files")
            by_name[base] = info
        _refuse_several_cases(list(by_name), name)
        return [_read_member(archive, by_name[base], base, name) for base in sorted(by_name)]


def _refuse_several_cases(names: list[str], name: str) -> None:
    """InputError when a zip holds more than four scans whose names name more than one case (four scans of
    one case named unevenly, case7_flair_reg beside case7_t1, are left to the usual check)."""
    scans = [n for n in names if names_a_scan(n)]
    stems = case_stems(scans)
    if len(scans) > len(MODALITIES) and len(stems) > 1:
        raise InputError(f"{name}: holds the scans of {len(stems)} cases ({', '.join(stems[:5])}"
                         f"{', ...' if len(stems) > 5 else ''}); expected one case's files: zip or drop each case on its own")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, base: str, name: str) -> Member:
    if info.flag_bits & 0x1:
        return Member(base, None, f"{base}: encrypted inside {name}; expected an unencrypted zip")
    try:
        return Member(base, archive.read(info))
    except Exception as exc:  # bad CRC, a damaged deflate stream (zlib.error), an unsupported method...
        return Member(base, None, f"{base}: damaged inside {name} ({type(exc).__name__}: {exc}); expected an intact "
                                  f"file (zip it again from the original)")


def _parts(member: str) -> list[str]:
    """A member's path, split at either separator: zips made on Windows may hold backslashes."""
    return member.replace("\\", "/").split("/")
