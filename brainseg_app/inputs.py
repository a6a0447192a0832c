"""Step 1: the drop zone, the sample case and the table that says which file is which modality."""
from __future__ import annotations

import hashlib

import streamlit as st

from brainseg import MODALITIES, report
from brainseg.archive import image_members, is_zip_name
from brainseg.classify import classify_file
from brainseg.errors import BrainsegError
from brainseg.io import NO_ORIENTATION, assemble_case, orientation_recorded
from brainseg.labelmaps import read_label_map
from brainseg.naming import FORMATS, case_stems
from brainseg_app.common import IMAGE_TYPES, ROLES, ROOT, attempt, state
from brainseg_app.state import CaseInputs, DroppedFile


SAMPLE_DIR = ROOT / "assets" / "sample"


# what a file turned out to be when its name suggested something else
NOTES = {"scan": "named like a segmentation, but holds an MRI scan: choose its modality under 'Used as'",
         "labels": "holds only label values: a segmentation; choose 'ground truth' under 'Used as' to score against it",
         "case": "a 4-channel image: read as FLAIR, T1, T1ce, T2, the Medical Segmentation Decathlon's order"}


def parse_file(name: str, data: bytes) -> DroppedFile:
    """One dropped file, decoded once (``classify.classify_file``): a scan, a label map, a case or an error."""
    found = classify_file(name, data)
    entry = DroppedFile(name=name, size=len(data), digest=_digest(data),
                        error=found.error, guess=found.modality, note=NOTES[found.kind] if found.misnamed else None)
    if found.kind is not None:
        setattr(entry, found.kind, found.value)
        entry.data = data if found.kind == "labels" else None
    return entry


ZIP_MEMBER = "::"  # a zip member's key in "parsed": the zip's upload id, this, the member's file name


def read_upload(parsed: dict[str, DroppedFile], upload_id: str, upload) -> list[str]:
    """The keys in ``parsed`` of one upload, parsed once: the file's own, or one per image file of a zip
    (the zip's own, holding its error, when it cannot be read)."""
    if not is_zip_name(upload.name):
        if upload_id not in parsed:
            parsed[upload_id] = parse_file(upload.name, upload.getvalue())
        return [upload_id]
    known = [k for k in parsed if k == upload_id or k.startswith(upload_id + ZIP_MEMBER)]
    if known:
        return known
    data = upload.getvalue()
    try:
        members = image_members(data, upload.name)
    except BrainsegError as exc:
        parsed[upload_id] = DroppedFile(name=upload.name, size=len(data), digest=_digest(data), error=str(exc))
        return [upload_id]
    for member in members:
        entry = (parse_file(member.name, member.data) if member.error is None else
                 DroppedFile(name=member.name, size=0, digest=f"unreadable {upload_id} {member.name}", error=member.error))
        entry.archive = upload.name
        parsed[upload_id + ZIP_MEMBER + member.name] = entry
    return [upload_id + ZIP_MEMBER + member.name for member in members]


def _once_each(parsed: dict[str, DroppedFile], ids: list[str]) -> list[str]:
    """``ids`` less files an earlier one repeats, name and bytes (a zip dropped beside its own files, or
    twice), said once. The same bytes under another name are left to the checks that name both."""
    def same(file_id: str) -> tuple[str, str]:
        return parsed[file_id].name, parsed[file_id].digest

    first: dict[tuple[str, str], str] = {}
    for file_id in ids:
        first.setdefault(same(file_id), file_id)
    repeats = [i for i in ids if first[same(i)] != i]
    if repeats:
        st.info("Dropped more than once, used once: " + "; ".join(
            f"{_shown_name(parsed[i])} is {_shown_name(parsed[first[same(i)]])}" for i in repeats) + ".")
    return [i for i in ids if i not in repeats]


def _shown_name(entry: DroppedFile) -> str:
    """A file's name, with the zip it came in."""
    return f"{entry.name} (in {entry.archive})" if entry.archive else entry.name


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def use_uploads() -> None:
    st.session_state["source"] = "upload"


def inputs_section() -> CaseInputs | None:
    """Drop zone, sample button and the modality table; returns the case once four scans are set.

    ``st.session_state["inputs_incomplete"]`` says whether files are given that make no case (yet).
    """
    st.subheader("1 · Scans")
    st.session_state["inputs_incomplete"] = False
    uploads = st.file_uploader(
        f"Drop the four scans here: FLAIR, T1, T1ce, T2 ({FORMATS}, or a .zip of them; any BraTS "
        "naming), skull-stripped and co-registered as BraTS provides them. A segmentation file added here is used "
        "as ground truth.",
        type=[*IMAGE_TYPES, "zip"],
        accept_multiple_files=True,
        key="uploads",
        on_change=use_uploads,
    )
    left, right = st.columns([1, 3])
    if left.button("Try the sample case", key="sample"):
        st.session_state["source"] = "sample"
    right.caption("Sample: BraTS-GLI-00001-000 (BraTS 2023 adult glioma) from BrainLesion/tutorials, Apache-2.0; see assets/README.md.")

    parsed = state("parsed", {})
    if state("source", "upload") == "sample":
        with attempt("Reading the sample case"):
            files = sorted(SAMPLE_DIR.glob("*.nii*"))
            if len(files) < 4:
                raise FileNotFoundError(f"the sample case is missing from {SAMPLE_DIR}; reinstall the app or upload your own scans")
            for path in files:
                key = f"sample/{path.name}"
                if key not in parsed:
                    parsed[key] = parse_file(path.name, path.read_bytes())
        ids = [k for k in parsed if k.startswith("sample/")]
        if uploads:
            st.button("Use my uploaded files instead", key="back_to_uploads", on_click=use_uploads)
    else:
        current = {f.file_id: f for f in uploads or []}
        ids = [file_id for upload_id, upload in current.items() for file_id in read_upload(parsed, upload_id, upload)]
        for stale in [k for k in parsed if k.split(ZIP_MEMBER)[0] not in current]:
            del parsed[stale]  # removed from the drop zone, or the sample: free its memory
        ids = _once_each(parsed, ids)
    if not ids:
        st.info("Drop four scans above, or try the sample case.")
        return None
    st.session_state["inputs_incomplete"] = True  # until the table makes a case of them
    inputs = modality_table(parsed, ids)
    st.session_state["inputs_incomplete"] = inputs is None
    return inputs


def modality_table(parsed: dict[str, DroppedFile], ids: list[str]) -> CaseInputs | None:
    header = st.columns([4, 3, 2])
    header[0].markdown("**File**")
    header[1].markdown("**Image**")
    header[2].markdown("**Used as**")
    roles: dict[str, str] = {}
    for file_id in ids:
        entry = parsed[file_id]
        row = st.columns([4, 3, 2])
        row[0].write(_shown_name(entry))
        if entry.error:
            row[1].write("—")
            row[2].write("not usable")
            st.error(entry.error if not entry.archive or entry.archive in entry.error else f"In {entry.archive}: {entry.error}")
            continue
        if entry.scan is not None:
            spacing = "x".join(f"{s:g}" for s in entry.scan.spacing)
            row[1].write(f"{'x'.join(map(str, entry.scan.array.shape))} voxels, {spacing} mm")
            options = ["flair", "t1", "t1ce", "t2", "ignore"]
            default = entry.guess if entry.guess in options else "ignore"
        elif entry.case is not None:
            row[1].write(f"4 channels of {'x'.join(map(str, entry.case.shape))} voxels")
            options, default = ["all", "ignore"], "all"
        else:
            row[1].write(f"label map {'x'.join(map(str, entry.labels[0].shape))}")
            options, default = ["truth", "ignore"], "truth" if entry.guess == "seg" else "ignore"
        roles[file_id] = row[2].selectbox(
            f"Role of {entry.name}", options, index=options.index(default), format_func=ROLES.get,
            key=f"role/{file_id}", label_visibility="collapsed",
        )
        if entry.note:
            st.info(f"{entry.name}: {entry.note}.")
        elif entry.scan is not None and entry.guess is None:
            st.warning(f"{entry.name}: cannot tell the modality from the name; choose it under 'Used as'.")

    by_role: dict[str, list[str]] = {}
    for file_id, role in roles.items():
        by_role.setdefault(role, []).append(file_id)
    for role, chosen in by_role.items():
        if (role in MODALITIES or role == "truth") and len(chosen) > 1:
            what = "each modality one file" if role in MODALITIES else "one file that role"
            st.error(f"{', '.join(_row_name(parsed, ids, i) for i in chosen)} are all set to {ROLES[role]}; give {what} "
                     f"under 'Used as' (set the others to 'ignore').")
            return None
    if "all" in by_role:  # one 4-channel image holds the case
        if len(by_role["all"]) > 1 or any(m in by_role for m in MODALITIES):
            given = [parsed[i].name for role in ("all", *MODALITIES) for i in by_role.get(role, [])]
            st.error(f"{', '.join(given)}: give either one 4-channel image or four scans; set the others to 'ignore' "
                     f"under 'Used as'.")
            return None
        case, key = parsed[by_role["all"][0]].case, (parsed[by_role["all"][0]].digest,)
    else:
        missing = [ROLES[m] for m in MODALITIES if m not in by_role]
        if missing:
            st.info(f"Still needed: {', '.join(missing)}.")
            return None
        case = None
        with attempt("Combining the scans"):
            scans = {m: parsed[by_role[m][0]].scan for m in MODALITIES}
            case = assemble_case(scans)  # label values from the four scans' names, as the command line reads them
        if case is None:
            return None
        key = tuple(parsed[by_role[m][0]].digest for m in MODALITIES)  # the same scans dropped again are the same case
    truth_id = by_role.get("truth", [None])[0]
    if truth_id is not None and not truth_fits(parsed[truth_id], case, key):
        truth_id = None
    st.success(f"Ready: {report.case_name(case.sources)}, {'x'.join(map(str, case.shape))} voxels of {'x'.join(f'{s:g}' for s in case.spacing)} mm.")
    stems = case_stems(case.sources.values())
    if len(stems) > 1:
        st.warning(f"The file names name {len(stems)} cases ({', '.join(stems)}): check that the four scans are one "
                   f"patient's, from one session, before trusting the result.")
    if not orientation_recorded(case.header):
        st.warning(f"{report.case_name(case.sources)}: {NO_ORIENTATION}. The slice views' R/L, A/P and S/I letters and "
                   f"scanner positions rest on that reading.")
    if not case.has_geometry:
        st.warning(".npy arrays carry no orientation or voxel size: they are taken as 1 mm voxels in BraTS files' axis "
                   "order (LPS). The slice views, the volumes in mL and the downloaded NIfTI rest on that assumption; "
                   "use NIfTI files where you can.")
    elif case.assumed_on_grid:
        st.warning(f"{', '.join(case.assumed_on_grid)}: .npy arrays carry no orientation, so they are taken to lie on the "
                   f"NIfTI scans' grid as stored; if one was saved flipped or transposed, the network sees mismatched "
                   f"anatomy. Use NIfTI files where you can.")
    return CaseInputs(case, key, parsed[truth_id] if truth_id else None)


def _row_name(parsed: dict, ids: list[str], file_id: str) -> str:
    """A file's name, with its row in the table when another file has the same name."""
    name = _shown_name(parsed[file_id])
    twins = [i for i in ids if _shown_name(parsed[i]) == name]
    return f"{name} (row {ids.index(file_id) + 1})" if len(twins) > 1 else name


def truth_fits(entry: DroppedFile, case, key: tuple) -> bool:
    """Whether a dropped segmentation lies on the scans' grid, checked once per set of scans, before the
    run (its label values are read when it is scored, as the user chooses them)."""
    if entry.grid_check is None or entry.grid_check[0] != key:
        problem = None
        try:
            read_label_map(entry.data, entry.name, case)
        except BrainsegError as exc:
            problem = str(exc)
        entry.grid_check = (key, problem)
    problem = entry.grid_check[1]
    if problem:
        st.error(f"Ground truth: {problem.rstrip('.')}. The scans can still be segmented; drop a segmentation of this case to score them.")
    return problem is None
