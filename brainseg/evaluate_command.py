"""``brainseg evaluate``: BraTS metrics for one prediction or two folders of cases."""
from __future__ import annotations

import csv
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from brainseg.comparison import CONFIDENCE, paired_difference
from brainseg.config import LESION_CHALLENGES
from brainseg.datasets import is_dataset, label_convention_of
from brainseg.errors import BrainsegError, InputError
from brainseg.files import check_can_create
from brainseg.labels import REGIONS, chosen_convention
from brainseg.lesion_metrics import MISSED_HD95
from brainseg.metrics import summarise
from brainseg.naming import (GEOMETRY_SUFFIXES, case_folders, case_problem, image_files, is_hidden,
                             is_slicer_segmentation, names_a_scan, scan_folder, segmentation_file, strip_suffix)
from brainseg.report import to_json
from brainseg.scoring import AUTO_CHALLENGE, evaluate_files, score_missing

log = logging.getLogger(__name__)

METRICS = ("dice", "hd95", "iou", "precision", "recall", "specificity", "accuracy")
# tried in turn for case id {}: "{}_seg.nii.gz", "{}.nii.gz", "{}_seg.nii", ..., "{}.mha", and the name 3D Slicer
# gives a segmentation named for its case
PREDICTION_NAMES = (*("{}" + ending + suffix for suffix in GEOMETRY_SUFFIXES for ending in ("_seg", "")), "{}.seg.nrrd")
SHOWN_NAMES = 5  # names a message lists before "..."
LESION_METRICS = ("dice", "hd95", "matched", "missed", "false_positives")
COMPARED = {"dice": lambda res, r: res["regions"][r]["dice"], "hd95": lambda res, r: res["regions"][r]["hd95"],
            "lesion_dice": lambda res, r: res["lesion_wise"]["regions"][r]["dice"],
            "lesion_hd95": lambda res, r: res["lesion_wise"]["regions"][r]["hd95"]}
FEW_CASES = 10  # below this the t interval leans on the differences being roughly normal, which few cases cannot show


@dataclass
class Pairing:
    """Reference cases of a folder matched with prediction files."""

    pairs: list[tuple[str, Path, Path]]  # (case id, prediction, reference)
    reference_files: dict[str, Path]  # every reference case found: case id -> its segmentation
    reference_errors: dict[str, str]  # reference cases whose segmentation is ambiguous: case id -> why
    unmatched_references: list[str]  # case ids without a prediction
    unmatched_predictions: list[str]  # prediction file names named like no reference case

    @property
    def references(self) -> int:
        return len(self.reference_files) + len(self.reference_errors)

    def summary(self, results: dict, failed: dict[str, str] | None = None, missing_as_empty: bool = False) -> dict:
        """What the means cover: ``results``, the scored cases (those scored as empty marked "missing");
        ``failed``, the cases whose files could not be scored, and why."""
        return {
            "scored": len(results),
            "scored_as_empty": _scored_as_empty(results),
            "errors": dict(failed or {}),
            "references": self.references,
            "unmatched_references": self.unmatched_references,
            "unmatched_predictions": self.unmatched_predictions,
            "missing_scored_as_empty": missing_as_empty,
        }

    def describe(self, results: dict, failed: dict[str, str] | None = None) -> str:
        """One line for the printed table: what the means cover (``summary``'s arguments)."""
        text = f"scored {len(results)} of {self.references} reference cases"
        if failed:
            text += f"; errors (above) in {_few(list(failed))}"
        if self.unmatched_references:
            text += f"; no prediction for {_few(self.unmatched_references)}"
        empty = _scored_as_empty(results)
        if empty:
            text += f"; scored as empty predictions (--missing-as-empty): {_few(empty)}"
        if self.unmatched_predictions:
            text += f"; predictions matching no case: {_few(self.unmatched_predictions)}"
        return text


def _holds_segmentation(folder: Path) -> bool:
    try:
        return segmentation_file(folder) is not None
    except InputError:  # two candidates: a segmentation all the same
        return True


def _scored_as_empty(results: dict) -> list[str]:
    """The cases ``score_missing`` scored as empty predictions."""
    return [case_id for case_id, result in results.items() if result.get("missing")]


def _case_folder_segmentation(folder: Path) -> Path | None:
    """The segmentation of a folder that is one case (its scans and a seg file), else None."""
    return segmentation_file(folder) if case_problem(folder) is None else None


def reference_cases(ref_dir: Path, skip: Path | None = None, errors: dict[str, str] | None = None) -> dict[str, Path]:
    """Case id -> segmentation file: case folders holding a seg file (``skip``, the predictions' folder when
    it lies inside, left out), and label map files; a case folder itself is its one case (not its scans
    taken for references). A case folder with two files that could each be its segmentation goes into
    ``errors`` (case id -> why) when given, else raises InputError."""
    own = _case_folder_segmentation(ref_dir)
    if own is not None:
        return {ref_dir.name: own}
    refs: dict[str, Path] = {}
    for case_id, folder in case_folders(ref_dir, skip=skip).items():
        try:
            seg = segmentation_file(folder)
        except InputError as exc:
            if errors is None:
                raise
            errors[case_id] = str(exc)
            continue
        if seg is not None:
            refs[case_id] = seg
    for p in image_files(ref_dir):
        if _is_label_map_name(p.name) and not names_a_scan(p.name):  # scans beside the maps are not references
            refs[_case_id(p.name)] = p
    if not refs and not errors:
        raise InputError(
            f"{ref_dir}: no reference cases; expected case folders holding a CASE_seg.nii.gz, or label map files"
            + ("; this is a Decathlon / nnU-Net dataset folder: give its labelsTr folder" if is_dataset(ref_dir) else "")
        )
    return refs


def pair_folders(pred_dir: Path, ref_dir: Path, missing_as_empty: bool = False) -> Pairing:
    """Match each reference case with a prediction file (CASE_seg.nii.gz or CASE.nii.gz).

    Scoring a few predictions against a full data folder is allowed; the cases left out and the
    predictions that match no case are logged. Raises InputError when nothing matches.
    """
    ambiguous: dict[str, str] = {}
    refs = reference_cases(ref_dir, skip=pred_dir, errors=ambiguous)
    # suffixes in any case, as segment reads them (CASE_seg.NII.GZ is CASE_seg.nii.gz); a name in another case
    # (case_seg.nii.gz, as a case-insensitive file system may keep it) where no name matches as it is
    exact: dict[str, list[Path]] = {}
    folded: dict[str, list[Path]] = {}
    for p in image_files(pred_dir):
        stem = strip_suffix(p.name)
        exact.setdefault(stem + p.name[len(stem):].lower(), []).append(p)
        folded.setdefault(p.name.lower(), []).append(p)
    pairs = []
    for case_id, ref in refs.items():
        names = [n.format(case_id) for n in PREDICTION_NAMES]
        found = next((exact[n] for n in names if n in exact), None) or next(
            (folded[n.lower()] for n in names if n.lower() in folded), None)
        if found is None:
            continue
        if len(found) > 1:
            raise InputError(f"{', '.join(p.name for p in found)} in {pred_dir}: two predictions for case {case_id}; "
                             f"expected one (remove the other)")
        pairs.append((case_id, found[0], ref))
    itself = [case_id for case_id, prediction, ref in pairs if prediction.resolve() == ref.resolve()]
    if itself:  # evaluate X X: every case would score perfectly
        raise InputError(f"{pred_dir}: the predictions of {_few(itself)} are the reference files themselves; expected "
                         f"a folder of predictions apart from the references in {ref_dir}")
    scored = {case_id for case_id, _, _ in pairs}
    used = {pred.name for _, pred, _ in pairs}
    predictions = [p.name for p in image_files(pred_dir) if _is_label_map_name(p.name)]
    pairing = Pairing(pairs, refs, ambiguous, [c for c in refs if c not in scored], [n for n in predictions if n not in used])
    if not pairs:
        swapped = not predictions and any(p.is_dir() and _holds_segmentation(p) for p in pred_dir.iterdir()) \
            and any(_is_label_map_name(p.name) for p in ref_dir.iterdir() if p.is_file())
        raise InputError(
            f"{pred_dir}: no prediction named like a case of {ref_dir} ({_few(list(refs))}); expected "
            f"CASE_seg.nii.gz or CASE.nii.gz, found {_few(predictions) or 'no .nii/.nii.gz/.nrrd/.mha files'}"
            + ("; it holds case folders with segmentations: the predictions come first, then the references" if swapped else "")
        )
    if pairing.unmatched_references:
        log.warning("%d of %d reference cases have no prediction in %s: %s; %s", len(pairing.unmatched_references),
                    len(refs), pred_dir, _few(pairing.unmatched_references),
                    "they are scored as empty predictions where their reference can be read (--missing-as-empty)"
                    if missing_as_empty else
                    "the summary leaves them out (unless --missing-as-empty scores them as empty predictions)")
    if pairing.unmatched_predictions:
        log.warning("%d prediction files in %s match no reference case in %s: %s",
                    len(pairing.unmatched_predictions), pred_dir, ref_dir, _few(pairing.unmatched_predictions))
    return pairing


def run_evaluate(args) -> int:
    pred, ref = Path(args.prediction), Path(args.reference)
    for p in (pred, ref):
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
    if pred.is_file() and ref.is_dir():
        # one case's folder (read through CASE/CASE/, as extracted from a zip): its segmentation is the reference
        ref = _case_folder_segmentation(scan_folder(ref)) or ref
    if pred.is_file() and pred.resolve() == ref.resolve():
        raise InputError(f"{pred}: given as both the prediction and the reference; expected a prediction and its reference")
    if pred.is_dir() != ref.is_dir():
        raise InputError(
            f"{pred} is {_kind(pred)} but {ref} is {_kind(ref)}; give two files (a prediction and its "
            f"reference) or two folders"
        )
    conventions = (chosen_convention(args.prediction_labels), chosen_convention(args.reference_labels),
                   label_convention_of(ref if ref.is_dir() else ref.parent))
    if args.csv:
        check_can_create([args.csv])
    other = Path(args.compare) if args.compare else None
    if other is not None and not (pred.is_dir() and other.is_dir()):
        raise InputError(f"--compare {other}: expected a second folder of predictions of the reference cases, beside the "
                         f"folder {pred}" + ("" if other.exists() else " (no such folder)"))
    # each case by its own challenge's rules when its reference's file name says which
    lesions = args.lesion_challenge or (AUTO_CHALLENGE if args.lesion_wise else None)
    if pred.is_file():
        return _evaluate_one(pred, ref, conventions, lesions, args)
    return _evaluate_folders(pred, ref, other, conventions, lesions, args)


def _evaluate_one(pred: Path, ref: Path, conventions: tuple, lesions: str | None, args) -> int:
    """One prediction file against its reference: a table, CSV or JSON of one case."""
    result = evaluate_files(pred, ref, *conventions, lesion_challenge=lesions)
    case_id = _case_id(ref.name)
    if args.csv:
        _write_csv(Path(args.csv), {case_id: result})
    if args.json:
        print(to_json(result))
    else:
        _print_table({case_id: result})
        print(_conventions_line([result]))
        if lesions:
            _print_lesion_wise({case_id: result})
    return 0


def _evaluate_folders(pred: Path, ref: Path, other: Path | None, conventions: tuple, lesions: str | None, args) -> int:
    """A folder of predictions against the reference cases (and a second folder paired with it, ``--compare``);
    2 when a case could not be scored."""
    pairing, results, failed = score_folder(pred, ref, conventions, named=other is not None, lesion_challenge=lesions,
                                            missing_as_empty=args.missing_as_empty)
    if not results:
        return 2
    summary = {r: {m: summarise([res["regions"][r][m] for res in results.values()]) for m in METRICS} for r in REGIONS}
    payload = {"cases": results, "summary": summary, "matching": pairing.summary(results, failed, args.missing_as_empty)}
    if lesions:
        summary["lesion_wise"] = {r: {m: summarise([res["lesion_wise"]["regions"][r][m] for res in results.values()])
                                      for m in LESION_METRICS} for r in REGIONS}
    if other is not None:
        other_pairing, other_results, other_failed = score_folder(other, ref, conventions, named=True, lesion_challenge=lesions,
                                                                  missing_as_empty=args.missing_as_empty)
        payload["comparison"] = {**compare(results, other_results, pred, other),
                                 "matching": other_pairing.summary(other_results, other_failed, args.missing_as_empty)}
    if args.csv:
        _write_csv(Path(args.csv), results)
    if args.json:
        print(to_json(payload))
    else:
        _print_table(results)
        _print_summary(summary)
        print(pairing.describe(results, failed))
        print(_conventions_line(list(results.values())))
        if lesions:
            _print_lesion_wise(results, summary["lesion_wise"])
        if other is not None:
            print(f"\n{other}: {other_pairing.describe(other_results, other_failed)}")
            print(_conventions_line(list(other_results.values())))
            _print_comparison(payload["comparison"])
    return 2 if failed or (other is not None and other_failed) else 0


def score_folder(pred: Path, ref: Path, conventions: tuple, named: bool = False, lesion_challenge: str | None = None,
                 missing_as_empty: bool = False) -> tuple[Pairing, dict, dict[str, str]]:
    """Each prediction of a folder scored against its reference case: (pairing, case -> result, failed case
    id -> why). One bad file costs its case (an ``error: CASE: ...`` line, naming the folder when ``named``), not
    the cohort's scores; with ``missing_as_empty`` a reference case without a (readable) prediction is scored
    as an empty prediction (``scoring.score_missing``) and marked "missing"."""
    pairing = pair_folders(pred, ref, missing_as_empty)
    results, failed = {}, {}

    def fail(case_id: str, why: str, folder: Path) -> None:
        failed[case_id] = why
        print(f"error: {case_id}{f' in {folder}' if named else ''}: {why}", file=sys.stderr)

    for case_id, why in pairing.reference_errors.items():  # costs its own case, not the cohort's scores
        fail(case_id, why, ref)
    for case_id, p, r in pairing.pairs:
        try:
            results[case_id] = evaluate_files(p, r, *conventions, lesion_challenge=lesion_challenge)
        except BrainsegError as exc:
            fail(case_id, str(exc), pred)
    if missing_as_empty:
        for case_id in [c for c in [*pairing.unmatched_references, *failed] if c in pairing.reference_files]:
            try:
                results[case_id] = score_missing(pairing.reference_files[case_id], *conventions[1:],
                                                 lesion_challenge=lesion_challenge)
            except BrainsegError as exc:  # the reference itself is unreadable: nothing to score against
                if case_id not in failed:  # a paired case's error was said above
                    fail(case_id, str(exc), pred)
        results = dict(sorted(results.items()))
    return pairing, results, failed


def compare(first: dict, second: dict, first_dir: Path, second_dir: Path) -> dict:
    """Paired differences (second - first) per region for Dice and HD95 over the cases both folders scored.

    Raises InputError when the folders share no scored case.
    """
    cases = [c for c in first if c in second]
    if not cases:
        raise InputError(f"--compare {second_dir}: none of its predictions is of a case scored in {first_dir}; "
                         f"expected predictions of the same reference cases")
    left_out = sorted(set(first) ^ set(second))
    if left_out:
        log.warning("comparison leaves out %d case(s) only one folder scored: %s", len(left_out), _few(left_out))
    lesions = all("lesion_wise" in res for res in (*first.values(), *second.values()))
    metrics = {m: value for m, value in COMPARED.items() if lesions or not m.startswith("lesion_")}
    differences = {
        r: {m: paired_difference([value(first[c], r) for c in cases], [value(second[c], r) for c in cases],
                                 m.removeprefix("lesion_")).to_dict()
            for m, value in metrics.items()}
        for r in REGIONS
    }
    return {"first": str(first_dir), "second": str(second_dir), "cases": cases, "difference": differences,
            "method": f"second - first per case; mean over cases; {CONFIDENCE:.0%} Student t interval of the mean "
                      f"difference (n - 1 degrees of freedom)"}


def _print_comparison(comparison: dict) -> None:
    n = len(comparison["cases"])
    print(f"\ncomparison on {n} case{'s' if n != 1 else ''}: {comparison['second']} minus {comparison['first']} "
          f"(HD95: lower is better)")
    print(f"{'region':<8}{'metric':<13}{'first':>9}{'second':>9}{'difference':>12}   {CONFIDENCE:.0%} interval     better/worse")
    for r in REGIONS:
        for m, d in comparison["difference"][r].items():
            if not d["cases"]:
                print(f"{r:<8}{m:<13}   no case has a finite value on both sides")
                continue
            interval = f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d["ci_low"] is not None else "(one case)"
            print(f"{r:<8}{m:<13}{d['first_mean']:>9.3f}{d['second_mean']:>9.3f}{d['mean_difference']:>+12.3f}   "
                  f"{interval:<18}{d['second_better']:>3} / {d['first_better']}")
    if 1 < n < FEW_CASES:
        print(f"with {n} cases the interval assumes the per-case differences are roughly normal, which so few "
              f"cases cannot show; read the case counts beside it")


def _conventions_line(results: list[dict]) -> str:
    """How the label values were read, e.g. "labels read as: prediction msd (named in its header),
    reference brats2018 (guessed from the values)"; cases scored without a prediction (--missing-as-empty) say nothing."""
    results = [r for r in results if not r.get("missing")]
    said = {"values": "guessed from the values", "header": "named in its header", "dataset.json": "named by dataset.json",
            "name": "from its BraTS 2023+ file name", "reference": "read as its reference is",
            "segments": "from its 3D Slicer segments' names"}
    parts = []
    for who in ("prediction", "reference"):
        seen = sorted({r["label_conventions"][who] for r in results})
        sources = sorted({said[s] for r in results if (s := r["label_conventions"]["read_from"][who]) in said})
        parts.append(f"{who} {'/'.join(seen)}" + (f" ({'; '.join(sources)})" if sources else ""))
    return "labels read as: " + ", ".join(parts)


def _case_id(name: str) -> str:
    """The case a label map file names: "Brats18_X_1_seg.nii.gz" -> "Brats18_X_1", and 3D Slicer's
    "Brats18_X_1.seg.nrrd" too."""
    stem = strip_suffix(name)
    stem = stem.removesuffix(".seg") if is_slicer_segmentation(name) else stem
    return stem.removesuffix("_seg").removesuffix("-seg")


def _is_label_map_name(name: str) -> bool:
    # segment --save-probabilities writes CASE_seg_probabilities.nii.gz beside each prediction
    return name.lower().endswith(GEOMETRY_SUFFIXES) and not strip_suffix(name).endswith("_probabilities") and not is_hidden(name)


def _few(names: list[str]) -> str:
    """The first few names, comma-separated, with how many more there are."""
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def _kind(path: Path) -> str:
    return "a folder" if path.is_dir() else "a file"


def _print_table(results: dict, scores=lambda res: res["regions"]) -> None:
    """Dice and HD95 per region and case; ``scores``: where a case's result holds them."""
    print(f"{'case':<28}" + "".join(f"{'Dice ' + r:>8}{'HD95 ' + r:>9}" for r in REGIONS))
    for case_id, res in results.items():
        regions = scores(res)
        print(f"{case_id:<28}" + "".join(f"{regions[r]['dice']:>8.4f}{regions[r]['hd95']:>9.2f}" for r in REGIONS))


def _print_summary(summary: dict) -> None:
    """The mean and median lines under a table: Dice and HD95 per region."""
    for stat in ("mean", "median", "std"):  # std: the sample standard deviation over the cases (none for one)
        print(f"{stat:<28}" + "".join(f"{_number(summary[r]['dice'][stat], 8, 4)}{_number(summary[r]['hd95'][stat], 9, 2)}"
                                      for r in REGIONS))


def _number(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None or math.isnan(value) else f"{value:>{width}.{digits}f}"


def _print_lesion_wise(results: dict, summary: dict | None = None) -> None:
    used = {}
    for case_id, res in results.items():
        used.setdefault(res["lesion_wise"]["challenge"], []).append(case_id)
    rules = []
    for challenge, cases in used.items():
        dilation, min_volume = LESION_CHALLENGES[challenge]
        rules.append(f"BraTS 2023+ {challenge}" + (f" ({len(cases)} case{'s' * (len(cases) > 1)})" if len(used) > 1 else "")
                     + f": lesions whose {dilation}-voxel dilations meet merged, those of at most {min_volume:g} mm^3 left out")
    print(f"\nlesion-wise ({'; '.join(rules)}; a missed lesion or false positive scores 0 and {MISSED_HD95:g} mm)")
    _print_table(results, lambda res: res["lesion_wise"]["regions"])
    if summary:
        _print_summary(summary)
    totals = {r: [sum(res["lesion_wise"]["regions"][r][k] for res in results.values())
                  for k in ("matched", "missed", "false_positives")] for r in REGIONS}
    print("lesions found / missed / false positives: " + ", ".join(f"{r} {a} / {b} / {c}" for r, (a, b, c) in totals.items()))


def _write_csv(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        lesions = all("lesion_wise" in res for res in results.values())
        writer.writerow(["case"] + [f"{m}_{r}" for r in REGIONS for m in METRICS]
                        + (["lesion_challenge"] + [f"lesion_{m}_{r}" for r in REGIONS for m in LESION_METRICS] if lesions else []))
        for case_id, res in results.items():
            writer.writerow([case_id] + [res["regions"][r][m] for r in REGIONS for m in METRICS]
                            + ([res["lesion_wise"]["challenge"]] + [res["lesion_wise"]["regions"][r][m] for r in REGIONS
                                                                   for m in LESION_METRICS] if lesions else []))
