"""The ``brainseg`` command line: segment, evaluate, train, bench.

Heavy imports (torch) happen inside the commands, so ``brainseg --help`` starts fast. User errors
print one ``error: ...`` line and exit with status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from brainseg import MODALITIES
from brainseg.config import AUGMENTATION_ENGINES, LESION_CHALLENGES, NORMS, OUTPUT_MODES, ModelConfig, PreprocessConfig, TrainConfig
from brainseg.labels import AUTO, CONVENTIONS, LABEL_OPTIONS

log = logging.getLogger("brainseg")
READ_LABELS_HELP = ("auto: what a brainseg-written map's header or the dataset.json of a Decathlon / nnU-Net "
                    "dataset names, else for a BraTS 2023+ file name brats2023 (brats2024 when it holds 4), else "
                    "brats2023 when a map holds 3, else brats2018; brats2024: post-treatment maps, "
                    "4 = resection cavity (not tumour; auto would read it as enhancing tumour in a map without 3); "
                    "msd: Decathlon Task01, 1 edema, 2 non-enhancing, 3 enhancing")


def _add_inference_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint file (default: the shipped model)")
    p.add_argument("--patch-size", nargs=3, type=int, metavar=("X", "Y", "Z"), help="window size in voxels of the model grid (its axes in the checkpoint's orientation: LPS for brainseg's)")
    p.add_argument("--overlap", type=float, help="share of a window its neighbour overlaps (0-1, default from the checkpoint)")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (8x slower)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="auto: fp16 on CUDA, bf16 on CPUs with bf16 kernels, else fp32")


def modality_list(text: str) -> tuple[str, ...] | bool:
    """``--bias-correct``'s value: all (True: every scan the checkpoint reads), none, or modality names
    separated by commas."""
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if words in (["all"], ["none"]):
        return True if words == ["all"] else ()
    unknown = [w for w in words if w not in MODALITIES]
    twice = sorted({w for w in words if words.count(w) > 1})
    if not words or unknown or twice:
        problem = ("all and none stand alone, not in a list" if set(unknown) & {"all", "none"} else
                   f"unknown {', '.join(unknown)}" if unknown else f"{', '.join(twice)} given twice" if twice else "nothing given")
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}; expected all, none, or some of {','.join(MODALITIES)} "
                                         f"separated by commas (e.g. t1,t1ce)")
    return tuple(words)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainseg", description="Brain tumour segmentation in multimodal MRI (research use only).")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment a case or a cohort (a folder of case folders, or a dataset's images folder)")
    seg.add_argument("inputs", nargs="+", help="one case: a case folder, the four scan files, one 4-channel file, a .zip of "
                                               "a case's files, or a dataset case's CASE_0000 ... CASE_0003 files; a cohort: a folder of "
                                               "case folders, or a Decathlon / nnU-Net images folder (imagesTs)")
    seg.add_argument("-o", "--output", required=True, help="output .nii.gz or .seg.nrrd (3D Slicer segmentation) for one case, or a folder (cohort)")
    seg.add_argument("--stats", help="write volume statistics as JSON here (one case; a folder of cases gets CASE_stats.json beside each label map)")
    seg.add_argument("--min-component", type=int, help="remove whole-tumour components smaller than this many voxels")
    seg.add_argument("--bias-correct", type=modality_list, metavar="MODALITIES",
                     help="N4 bias-field correction inside the brain before z-scoring, of these scans: all, none, or some "
                          "of flair,t1,t1ce,t2 separated by commas (needs SimpleITK; default from the checkpoint: the "
                          "shipped one corrects all four, FLAIR and T2 with a stiffer field); the model card gives what it did on the validation cases")
    seg.add_argument("--max-component-distance", type=float, metavar="MM",
                     help="remove whole-tumour components farther than this from the largest one; 0 keeps all "
                          "(default from the checkpoint, 10)")
    seg.add_argument("--min-core-component", type=int, metavar="VOXELS",
                     help="tumour-core and enhancing pieces smaller than this become the region around them "
                          "(edema, necrotic core); each region's largest piece stays; 0 keeps all (default from the "
                          "checkpoint)")
    seg.add_argument("--no-progress", action="store_true")
    seg.add_argument("--save-probabilities", action="store_true",
                     help="also write the network's probabilities beside each label map as a 4D float NIfTI "
                          "(seg.nii.gz -> seg_probabilities.nii.gz); channels WT,TC,ET (or background,NCR,ED,ET)")
    seg.add_argument("--labels", choices=tuple(CONVENTIONS),
                     help="label values of the output: brats2018 (ET = 4), brats2023 (ET = 3) or msd (1 edema, "
                          "2 non-enhancing, 3 enhancing); default: the values of the dataset.json beside a Decathlon / "
                          "nnU-Net images folder, else brats2023 for BraTS 2023+ file names, else brats2018")
    _add_inference_options(seg)
    seg.add_argument("--threshold", type=float, help="sigmoid level a voxel must exceed to join WT/TC/ET (default from the checkpoint, 0.5)")

    ev = sub.add_parser("evaluate", help="BraTS metrics of a prediction against a reference (files or folders)")
    ev.add_argument("prediction")
    ev.add_argument("reference")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.add_argument("--csv", help="per-case table as CSV")
    ev.add_argument("--compare", metavar="PRED_DIR",
                    help="a second folder of predictions of the same cases (another checkpoint or setting): prints "
                         "per region the mean difference second - first in Dice and HD95 (lesion-wise too with --lesion-wise), its "
                         "95%% t interval over the cases, and how many cases each side wins")
    ev.add_argument("--missing-as-empty", action="store_true",
                    help="score a reference case with no prediction (or an unreadable one) as an empty prediction, as "
                         "the BraTS platform does (Dice 0 and HD95 373.13 mm where the reference has the region); "
                         "by default such a case is left out of the means, with a warning")
    ev.add_argument("--lesion-wise", action="store_true",
                    help="also score each reference lesion on its own, as BraTS ranks since 2023 (lesion-wise Dice "
                         "and HD95, with counts of found, missed and false-positive lesions)")
    ev.add_argument("--lesion-challenge", choices=sorted(LESION_CHALLENGES), metavar="CHALLENGE",
                    help="the BraTS 2023+ challenge whose lesion-wise parameters to use: GLI, SSA, PED, MEN "
                         "or MET (default: the one each reference's BraTS 2023+ file name names, BraTS-MET-..., "
                         "else GLI); implies --lesion-wise")
    ev.add_argument("--reference-labels", default=AUTO, choices=LABEL_OPTIONS,
                    help=f"label convention of the reference files; {READ_LABELS_HELP}")
    ev.add_argument("--prediction-labels", default=AUTO, choices=LABEL_OPTIONS,
                    help="label convention of the prediction files; auto: what a brainseg-written map's header "
                         "names, else as for the references without a dataset.json (another tool's Decathlon-valued "
                         "predictions need msd)")

    # no defaults here: unset options take the --config file's values, else TrainConfig's and BrainsegConfig's
    tr = sub.add_parser("train", help="train a U-Net on labelled BraTS cases",
                        description="Options override the --config file, which overrides the defaults shown.")
    tr.add_argument("--config", help="JSON settings in the shape of a run's config.json ({\"train\": {...}, "
                                     "\"model\": {...}}): repeats a run, and sets what has no option")
    tr.add_argument("--data", help="folder of labelled case folders, or a Decathlon / nnU-Net dataset folder "
                                   "(imagesTr, labelsTr, dataset.json); required unless the --config file names it")
    tr.add_argument("--output", required=True, help="run folder for checkpoints, logs and curves")
    tc, model, prep = TrainConfig, ModelConfig, PreprocessConfig  # class attributes: the defaults
    tr.add_argument("--max-steps", type=int, help=f"default {tc.max_steps}")
    tr.add_argument("--batch-size", type=int, help=f"default {tc.batch_size}")
    tr.add_argument("--patch-size", nargs=3, type=int, help=f"default {' '.join(map(str, tc.patch_size))}")
    tr.add_argument("--lr", type=float, help=f"default {tc.lr:g}")
    tr.add_argument("--val-every", type=int, help=f"default {tc.val_every}")
    tr.add_argument("--patience", type=int, help=f"validations without improvement before stopping (default {tc.patience}: never)")
    tr.add_argument("--validation", nargs="*", help="validation case IDs (default: the fixed BraTS 2018 split when "
                                                     "the data holds it, else a fifth of the cases drawn with --seed; "
                                                     "the flag alone: none, train on every case)")
    tr.add_argument("--spacing", type=float, help=f"working resolution in mm (default {prep.spacing[0]:g})")
    tr.add_argument("--norm", choices=NORMS, help=f"default {model.norm}")
    tr.add_argument("--output-mode", choices=OUTPUT_MODES, help=f"default {model.output_mode}")
    tr.add_argument("--residual", action=argparse.BooleanOptionalAction, help=f"residual blocks (default {model.residual})")
    tr.add_argument("--augment", action=argparse.BooleanOptionalAction, help=f"random flips, affine, gamma, bias field, noise and channel scaling (default {tc.augment})")
    tr.add_argument("--augmentation", choices=AUGMENTATION_ENGINES,
                    help=f"engine: torchio (each patch, on the CPU), torch (each batch, on the training device); "
                         f"default {tc.augmentation}: torch on CUDA, else torchio")
    tr.add_argument("--threads", type=int, help=f"default {tc.threads}: torch's choice")
    tr.add_argument("--seed", type=int, help=f"default {tc.seed}")
    tr.add_argument("--resume", help="state.pt of an earlier run, or its run folder; its config.json gives the settings "
                                     "no option names (the --time-limit counts again from this start; the decay it drives "
                                     "goes on from where the clock had taken it, or from the peak once it had run out)")
    tr.add_argument("--bias-correct", type=modality_list, metavar="MODALITIES",
                    help=f"N4 bias-field correction inside the brain before z-scoring, of these scans: all, none, or "
                         f"some of {','.join(MODALITIES)} separated by commas (once per case, for the cache; default: "
                         f"none, with --init the checkpoint's)")
    tr.add_argument("--init", help="start from this checkpoint's weights and settings (fresh optimiser and schedule); "
                                   "--config may change its inference and post-processing settings, not its network "
                                   "or preprocessing, except which scans N4 corrects (--bias-correct; the shipped "
                                   "model's: all four)")
    tr.add_argument("--time-limit", type=float, help=f"minutes; validate, save and stop when reached (default {tc.time_limit_minutes:g}: none)")
    tr.add_argument("--labels", choices=LABEL_OPTIONS,
                    help=f"label convention of the segmentations (default {tc.labels}); {READ_LABELS_HELP}")

    be = sub.add_parser("bench", help="time the pipeline stage by stage on a real case")
    be.add_argument("case", help="a case folder")
    be.add_argument("--checkpoint", help="checkpoint file (default: the shipped model)")
    be.add_argument("--repeats", type=int, default=3, help="runs of each variant, the median reported (default 3)")
    be.add_argument("--compare", nargs="*", default=["monai", "uniform"], choices=["monai", "uniform"],
                    help="baselines to time alongside (none: give the option with no names)")
    be.add_argument("--json", help="write the figures here")
    be.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # nibabel prints its header repairs to stderr on its own; a refused file is reported in one line
    logging.getLogger("nibabel").setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    from brainseg.errors import BrainsegError, describe_error

    try:
        return {"segment": _segment, "evaluate": _evaluate, "train": _train, "bench": _bench}[args.command](args)
    except (BrainsegError, ValueError) as exc:  # ValueError: settings out of range, reported by the library
        return _fail(str(exc), alike_on_every_rank=True)
    except OSError as exc:  # an unreadable input, an output folder that cannot be written, a full disk
        return _fail(describe_error(exc))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _fail(message: str, alike_on_every_rank: bool = False) -> int:
    """Report a user error as one ``error: ...`` line on stderr; exit status 2.

    ``alike_on_every_rank``: bad input or settings, which every torchrun process meets alike: said by rank 0
    only, once (an OSError, a full disk on one node, is said by the process that met it).
    """
    if not alike_on_every_rank or os.environ.get("RANK", "0") == "0":
        print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def _segment(args) -> int:
    from brainseg.config import SettingError
    from brainseg.segment_command import run_segment

    try:
        return run_segment(args)
    except SettingError as exc:  # an override out of range (--patch-size, --overlap, --threshold, ...)
        return _option_error(exc)


def _evaluate(args) -> int:
    from brainseg.evaluate_command import run_evaluate

    return run_evaluate(args)


# settings whose option is not simply "--" + the field name with dashes
_OPTION_NAMES = {"time_limit_minutes": "--time-limit", "min_component_voxels": "--min-component",
                 "max_component_distance_mm": "--max-component-distance",
                 "min_core_component_voxels": "--min-core-component", "bias_correction": "--bias-correct"}


def _option_error(exc) -> int:
    """A setting out of range, reported under the option the user typed, not the field behind it."""
    return _fail(f"{_OPTION_NAMES.get(exc.setting, '--' + exc.setting.replace('_', '-'))}: {exc.problem}", alike_on_every_rank=True)


def _train(args) -> int:
    from brainseg.config import SettingError

    try:
        best = _run_training(args)
    except SettingError as exc:
        return _option_error(exc)
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns here; one line is enough
        print(f"best checkpoint: {best}")
    return 0


# train options that set a BrainsegConfig field (section.field), not a TrainConfig one
_MODEL_OPTIONS = {"norm": "model.norm", "output_mode": "model.output_mode", "residual": "model.residual",
                  "spacing": "preprocess.spacing", "bias_correct": "preprocess.bias_correction"}


def _run_training(args) -> Path:
    """Every option is checked as the configuration objects are built, before any data is read."""
    from dataclasses import fields

    from brainseg.run_config import build_configs
    from brainseg.train import train

    option_of = {dest.removeprefix("--").replace("-", "_"): field for field, dest in _OPTION_NAMES.items()}
    given = {k: v for k, v in vars(args).items() if v is not None}
    model_options = {_MODEL_OPTIONS[k]: given[k] for k in _MODEL_OPTIONS if k in given}
    if "preprocess.spacing" in model_options:
        model_options["preprocess.spacing"] = (model_options["preprocess.spacing"],) * 3
    known = {f.name for f in fields(TrainConfig)}
    train_options = {option_of.get(k, k): v for k, v in given.items() if option_of.get(k, k) in known}
    tc, config = build_configs(args.config, train_options, model_options)
    return train(tc, config)


def _bench(args) -> int:
    from brainseg.bench import run_bench

    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
