"""``brainseg segment``: one case or a cohort (case folders, or a Decathlon / nnU-Net images folder), with a
progress bar and a summary."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from brainseg.config import scans_chosen
from brainseg.errors import InputError
from brainseg.files import check_can_create, check_can_write

if TYPE_CHECKING:
    from brainseg.datasets import CaseSource

log = logging.getLogger(__name__)


def is_cohort(inputs: list[str], output: str | None = None) -> bool:
    """One folder whose subfolders are cases (and which holds no scans itself), or the images folder
    of a Decathlon / nnU-Net dataset. A folder whose one subfolder holds the scans is a cohort of one case,
    or one case extracted into CASE/CASE/: a label map's name as ``output`` says the latter."""
    if len(inputs) != 1 or not Path(inputs[0]).is_dir():
        return False
    from brainseg.datasets import is_images_folder
    from brainseg.naming import image_files, names_a_scan, scan_folder

    folder = Path(inputs[0])
    if is_images_folder(folder):
        return True
    files = image_files(folder)
    if any(names_a_scan(p) for p in files) or not any(p.is_dir() for p in folder.iterdir()):
        return False
    if output is not None and _names_label_map(output) and scan_folder(folder) != folder:
        return False
    for p in files:  # a segmentation or stray file beside the case folders must not make the folder one case
        log.warning("%s: a file beside the case folders, not in one: skipped", p)
    return True


LABEL_MAP_ENDINGS = (".nii", ".nii.gz", ".seg.nrrd")  # .seg.nrrd: a 3D Slicer segmentation of named, coloured segments


def _names_label_map(output: str | Path) -> bool:
    """Whether an output path names one label map file (``LABEL_MAP_ENDINGS``), not a folder."""
    return Path(output).name.endswith(LABEL_MAP_ENDINGS)


def _dataset_case(inputs: list[str]) -> "CaseSource | None":
    """The ``datasets.CaseSource`` of input files from a dataset's images folder (one 4-channel file, or
    one case's CASE_0000 ... CASE_0003 channel files), read in the order and label values of its
    dataset.json; None for other inputs."""
    from brainseg.datasets import dataset_of, description_of, group_cases
    from brainseg.naming import NIFTI_SUFFIXES

    paths = [Path(p) for p in inputs]
    if not all(p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES) for p in paths):
        return None
    folder = paths[0].parent
    if len({p.absolute().parent for p in paths}) != 1 or dataset_of(folder) is None:
        return None
    cases = group_cases(paths, description_of(folder), folder)
    return cases[0] if len(cases) == 1 else None


def run_segment(args) -> int:
    from brainseg.checkpoint import default_checkpoint, load_checkpoint

    started = time.perf_counter()
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if not checkpoint.is_file():
        raise InputError(f"{checkpoint}: checkpoint not found; pass --checkpoint PATH")
    if is_cohort(args.inputs, args.output):
        return _run_cohort(args, checkpoint)
    inputs = args.inputs
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        from brainseg.naming import case_files, scan_folder

        inputs = [str(scan_folder(inputs[0]))]  # a case extracted into CASE/CASE/
        case_files(inputs[0])  # a folder with no scans: said of the input, not of the output's name
    out = Path(args.output)
    if not _names_label_map(out):
        raise InputError(f"{out}: output must end in .nii.gz, .nii or .seg.nrrd (a 3D Slicer segmentation); or give a "
                         f"folder of case folders, or a dataset's images folder, as input")
    outputs = [out] + ([Path(args.stats)] if args.stats else []) + ([probabilities_path(out)] if args.save_probabilities else [])
    if args.stats and Path(args.stats).resolve() in {p.resolve() for p in outputs[:1] + outputs[2:]}:
        raise InputError(f"{args.stats}: --stats names the label map's or the probabilities' own path; give the "
                         f"statistics another file (.json)")
    check_can_create(outputs)
    _refuse_overwriting_inputs(outputs, inputs)
    from brainseg.io import load_case

    t = time.perf_counter()
    source = _dataset_case(inputs)
    if source is None:
        case = _with_labels(load_case(inputs), args.labels)
    else:
        case = _with_labels(source.load(), args.labels or source.label_convention)
    load_seconds = time.perf_counter() - t
    loaded = load_checkpoint(checkpoint)
    settings = run_settings(args, loaded)
    result = _segment_one(args, case, loaded, settings, out, show_progress=not args.no_progress)
    result.seconds["load"] = load_seconds
    result.seconds["total"] = time.perf_counter() - started
    if args.stats:
        _write_json(Path(args.stats), _stats_payload(result, case, loaded, settings))
    _print_summary(result, case, out, tta=settings[0].tta)
    return 0


def _refuse_overwriting_inputs(outputs: list[Path], inputs: list[str]) -> None:
    """Writing the label map, its statistics or probabilities over a scan would destroy the user's data."""
    from brainseg.naming import case_files

    paths = [Path(p) for p in inputs]
    if len(paths) == 1 and paths[0].is_dir():
        paths = list(case_files(paths[0]).values())
    for out in outputs:
        if out.exists() and any(p.exists() and out.samefile(p) for p in paths):
            raise InputError(f"{out}: this is one of the input scans; choose another output path")


def _with_labels(case, convention: str | None):
    """The case with the output label convention the command or its dataset names (a read-only one, BraTS
    2024's, writes its tumour labels' values); None keeps the one its file names suggest."""
    from brainseg.labels import written_as

    return case if convention is None else replace(case, convention=written_as(convention))


def run_settings(args, loaded) -> tuple:
    """The checkpoint's inference and post-processing settings with the command's overrides, checked
    before any case is segmented (SettingError names the setting)."""
    from brainseg.pipeline import inference_settings, postprocess_settings

    inference = inference_settings(loaded, args.patch_size, args.overlap, True if args.tta else None, threshold=args.threshold)
    return inference, postprocess_settings(loaded, args.min_component, args.max_component_distance, args.min_core_component)


def corrected_modalities(args, loaded) -> tuple[str, ...]:
    """The modalities N4 corrects: ``--bias-correct``'s, else the checkpoint's own (SettingError names a
    modality the checkpoint does not read)."""
    if args.bias_correct is None:
        return loaded.config.preprocess.bias_correction
    return replace(loaded.config.preprocess, bias_correction=args.bias_correct).bias_correction


def _segment_one(args, case, loaded, settings: tuple, out: Path, show_progress: bool):
    from brainseg.labelmaps import save_labels, save_probabilities
    from brainseg.pipeline import segment_case

    inference, post = settings
    bar = _bar(show_progress)
    result = segment_case(case, loaded, inference, post, args.device, args.precision, progress=bar,
                          bias_correction=corrected_modalities(args, loaded))
    if bar is not None:
        bar.close()
    t = time.perf_counter()
    save_labels(result.labels, case, out, case.convention)
    if args.save_probabilities:
        save_probabilities(result.probabilities, case, probabilities_path(out))
    result.seconds["save"] = time.perf_counter() - t
    return result


def _output_convention(source, args) -> str:
    """The label values a cohort case is written in, known before loading it: the command's, its dataset's, or
    its file names' (as io.assemble_case decides them)."""
    from brainseg.labels import written_as
    from brainseg.naming import case_files, convention_from_names

    if args.labels or source.label_convention:
        return written_as(args.labels or source.label_convention)
    scans = case_files(source.scans[0]).values() if source.scans[0].is_dir() else source.scans
    return convention_from_names(p.name for p in scans)


def _done_before(source, target: Path, stats: Path, args, made_by: dict, modalities: tuple[str, ...]) -> bool:
    """Whether an earlier run left this case's outputs, made as this run would make them.

    The statistics are written last, so a run stopped before them does the case again; so does a run
    with other label values (one folder in two conventions would be scored wrongly), another checkpoint
    or other settings (``made_by``: the checkpoint's SHA-256 and the settings, as the statistics record them)."""
    if not (target.exists() and stats.exists() and (not args.save_probabilities or probabilities_path(target).exists())):
        return False
    try:
        recorded = json.loads(stats.read_text())
        written = recorded.get("label_convention")
    except (OSError, ValueError, AttributeError):
        return False
    wanted = _output_convention(source, args)
    if written != wanted:
        print(f"{source.name}: redone, its label map holds {written} values and this run writes {wanted}", file=sys.stderr)
        return False
    recorded = _in_todays_terms(recorded, modalities)
    changed = [MADE_BY_WORDS[key] for key, value in made_by.items() if recorded.get(key) != value]
    if changed:
        print(f"{source.name}: redone, its statistics record {' and '.join(changed)} other than this run's "
              f"(or none, from an older brainseg)", file=sys.stderr)
        return False
    return True


def probabilities_path(labels_path: Path) -> Path:
    """Where the probabilities of a label map go: "seg.nii.gz" -> "seg_probabilities.nii.gz", and a Slicer
    segmentation's beside it as NIfTI: "x.seg.nrrd" -> "x_probabilities.nii.gz"."""
    name = labels_path.name
    suffix = next(s for s in (".nii.gz", ".seg.nrrd", ".nii") if name.endswith(s))
    return labels_path.with_name(name[: -len(suffix)] + "_probabilities" + (".nii" if suffix == ".nii" else ".nii.gz"))


def _bar(show: bool):
    if not show or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=0, desc="windows", file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    update.close = bar.close
    return update


MADE_BY_WORDS = {"checkpoint_sha256": "a checkpoint", "settings": "settings", "precision": "a precision",
                 "bias_correction": "bias correction"}


def _in_todays_terms(recorded: dict, modalities: tuple[str, ...]) -> dict:
    """Statistics an older brainseg wrote, as this one writes them: before "bias_correction" (the scans asked
    for) only the scans corrected were recorded; no "bias_corrected" meant no N4, and true / false (before the
    choice per scan) all scans / none."""
    value = scans_chosen(recorded.get("bias_correction", recorded.get("bias_corrected", [])), modalities)
    return {**recorded, "bias_correction": list(value) if isinstance(value, (list, tuple)) else value}


def _made_by(loaded, settings: tuple, precision: str, bias_correction: list[str]) -> dict:
    """The part of a case's statistics that says which weights and settings made its label map."""
    from brainseg.checkpoint import fingerprint
    from brainseg.report import settings_record

    return {"checkpoint_sha256": fingerprint(loaded.path), "settings": settings_record(*settings), "precision": precision,
            "bias_correction": bias_correction}


def _stats_payload(result, case, loaded, settings: tuple) -> dict:
    from brainseg.report import run_record

    inference, post = settings
    return {
        **result.stats,
        "label_convention": case.convention,
        "inputs": case.sources,
        "spacing_mm": list(case.spacing),
        "shape": list(case.shape),
        **run_record(loaded, inference, post, result),
    }


def _write_json(path: Path, payload: dict) -> None:
    from brainseg.files import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))


def _print_summary(result, case, out: Path, tta: bool = False) -> None:
    from brainseg.labels import REGION_NAMES

    stats = result.stats
    print(f"segmentation: {out}  ({case.shape[0]}x{case.shape[1]}x{case.shape[2]}, labels {case.convention})")
    print(f"{'region':<24}{'voxels':>10}{'mL':>10}")
    for region, name in REGION_NAMES.items():
        entry = stats["regions"][region]
        print(f"{region + ' ' + name:<24}{entry['voxels']:>10}{entry['ml']:>10.2f}")
    for key, entry in stats["labels"].items():
        print(f"{'label ' + key + ' ' + entry['name']:<24}{entry['voxels']:>10}{entry['ml']:>10.2f}")
    seconds = "  ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items())
    copies = " x 8 mirrored copies" if tta else ""
    print(f"{result.windows} windows{copies}, {result.precision}; {seconds}")


def _run_cohort(args, checkpoint: Path) -> int:
    from brainseg.checkpoint import load_checkpoint
    from brainseg.errors import BrainsegError
    from brainseg.inference import PRECISION_NAMES, choose_dtype, resolve_device

    root, out_dir = Path(args.inputs[0]), Path(args.output)
    if _names_label_map(out_dir):
        raise InputError(f"{out_dir}: with a folder of cases as input, -o must be a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: is a file; with a folder of cases as input, -o must be a folder")
    if out_dir.resolve() == root.resolve():  # label maps among the case folders would end the cohort
        raise InputError(f"{out_dir}: is the folder of cases itself; choose another output folder (inside it is fine)")
    check_can_create([out_dir / "case_seg.nii.gz"], probe=False)  # check_can_write tries the folder itself, below
    cases = cohort_cases(root, out_dir)
    check_can_write(out_dir)  # a folder that cannot take the results fails now, not after each inference
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    mine = cases[rank::world]
    loaded = load_checkpoint(checkpoint)
    settings = run_settings(args, loaded)
    made_by = _made_by(loaded, settings, PRECISION_NAMES[choose_dtype(resolve_device(args.device), args.precision)],
                       list(corrected_modalities(args, loaded)))
    failures, resumed = 0, 0
    iterator = mine
    if not args.no_progress:
        from tqdm import tqdm

        iterator = tqdm(mine, desc=f"cases (rank {rank}/{world})" if world > 1 else "cases", file=sys.stderr)
    for source in iterator:
        target, stats = out_dir / f"{source.name}_seg.nii.gz", out_dir / f"{source.name}_stats.json"
        try:
            if _done_before(source, target, stats, args, made_by, loaded.config.preprocess.modalities):
                resumed += 1
                continue
            case = _with_labels(source.load(), args.labels or source.label_convention)  # None: the file names decide
            result = _segment_one(args, case, loaded, settings, target, show_progress=False)
            _write_json(stats, _stats_payload(result, case, loaded, settings))
        except BrainsegError as exc:  # this case's input; a failed write (OSError) stops the run
            failures += 1
            print(f"error: {source.name}: {exc}", file=sys.stderr)
        except (ValueError, RuntimeError, MemoryError) as exc:  # numpy's or torch's, on an input nothing foresaw
            failures += 1
            log.info("%s failed", source.name, exc_info=True)  # the traceback with -v, for a bug report
            print(f"error: {source.name}: failed unexpectedly ({type(exc).__name__}: {exc}); the other cases go on",
                  file=sys.stderr)
    done = f"{len(mine) - failures} of {len(mine)} cases segmented into {out_dir}"
    done += f" ({resumed} by an earlier run)" if resumed else ""
    print(done + (f" (rank {rank} of {world})" if world > 1 else ""))
    return 2 if failures else 0


def cohort_cases(root: Path, out_dir: Path) -> "list[CaseSource]":
    """The cases of a cohort: the image cases of a Decathlon / nnU-Net images folder, or the case folders
    of a folder of cases (``naming.case_folders``: HGG/ and LGG/ groups read through), less hidden ones
    (.ipynb_checkpoints, .git) and the output folder when it lies inside. Raises InputError when there are none."""
    from brainseg.datasets import CaseSource, description_of, image_cases, is_dataset, is_images_folder
    from brainseg.naming import case_folders

    if is_images_folder(root):
        return image_cases(root, description_of(root))
    if is_dataset(root):
        raise InputError(f"{root}: is a Decathlon / nnU-Net dataset folder; give its imagesTs (or imagesTr) folder")
    folders = case_folders(root, skip=out_dir)
    if not folders:
        raise InputError(f"{root}: no case folders (hidden folders and the output folder {out_dir} do not count)")
    return [CaseSource(name, (p,)) for name, p in folders.items()]

