"""``brainseg bench``: time the pipeline stage by stage and compare it with baselines in one run.

Every variant runs in its own process (so its start-up, peak memory and page faults are its own), and
the variants alternate within each repeat so that machine noise hits them alike. Variants:
- ``brainseg``: the real ``brainseg segment`` command with default settings (whole process);
- ``brainseg-fp32``: the same in fp32 eager, the quality reference for the fast path;
- ``monai-model-grid``: MONAI ``sliding_window_inference``, fp32, on the same network, input, patch,
  overlap and Gaussian weighting as ``brainseg``, then brainseg's labelling and post-processing (checks
  our stitching against MONAI's);
- ``monai-1mm``: the reference of issue 5: MONAI over the whole 240x240x155 volume at 1 mm,
  128x128x64 windows, overlap 0.5, Gaussian, fp32, same U-Net architecture (timing only);
- ``uniform-1mm``: the replaced app's loop, ``range(0, L - p + 1, stride)`` with uniform averaging
  (timing, and the share of voxels it never predicts).
"""
from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from brainseg.errors import BrainsegError

VARIANTS = ("brainseg", "brainseg-fp32", "monai-model-grid", "monai-1mm", "uniform-1mm")


def _run(cmd: list[str], label: str, env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB and stdout of one child process.

    Raises:
        BrainsegError: the child failed; the message holds the last line it wrote to stderr.
    """
    # output goes to files, not pipes: a child writing more than a pipe holds would block before wait4
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen
    if code != 0:
        last = err.strip().splitlines()[-1].removeprefix("error: ") if err.strip() else "no error message"
        raise BrainsegError(f"bench: the {label} run failed (exit status {code}): {last}")
    return seconds, usage.ru_maxrss / 1024, out


def run_bench(args) -> int:
    from brainseg.checkpoint import default_checkpoint, load_checkpoint
    from brainseg.files import check_can_create
    from brainseg.inference import resolve_device
    from brainseg.io import load_case

    if args.repeats < 1:
        raise ValueError(f"--repeats: got {args.repeats}; expected a whole number >= 1")
    case = Path(args.case)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    # bad input is reported here, as 'brainseg segment' reports it, rather than by a child process
    if args.json:
        check_can_create([args.json])  # before minutes of timing, not after
    load_case([case])
    load_checkpoint(checkpoint)
    resolve_device(args.device)
    variants = ["brainseg", "brainseg-fp32"]
    if "monai" in args.compare:
        try:
            import monai  # noqa: F401  (benchmark-only dependency)

            variants += ["monai-model-grid", "monai-1mm"]
        except ImportError:
            print("monai is not installed (pip install -e '.[bench]'): skipping the MONAI baselines", file=sys.stderr)
    if "uniform" in args.compare:
        variants.append("uniform-1mm")
    with tempfile.TemporaryDirectory(prefix="brainseg-bench-") as folder:
        work = Path(folder)
        records = _measure(args, variants, case, checkpoint, work)
        agreement = _agreement(work, variants)
    report = _report(records, agreement, case, checkpoint)
    _print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _measure(args, variants: list[str], case: Path, checkpoint: Path, work: Path) -> dict[str, list[dict]]:
    """Run every variant ``args.repeats`` times, alternating; outputs go to ``work``."""
    records: dict[str, list[dict]] = {v: [] for v in variants}
    env = dict(os.environ)
    for repeat in range(args.repeats):
        for variant in variants:
            out = work / f"{variant}.nii.gz"
            stats = work / f"{variant}.json"
            if variant.startswith("brainseg"):
                precision = "fp32" if variant.endswith("fp32") else "auto"
                cmd = [sys.executable, "-m", "brainseg.cli", "segment", str(case), "-o", str(out), "--stats", str(stats),
                       "--checkpoint", str(checkpoint), "--device", args.device, "--precision", precision, "--no-progress"]
            else:
                cmd = [sys.executable, "-m", "brainseg.bench", variant, str(case), str(checkpoint), str(out), str(stats), args.device]
            seconds, peak_mb, _ = _run(cmd, variant, env)
            record = {"wall_seconds": seconds, "peak_rss_mb": peak_mb, **json.loads(stats.read_text())}
            records[variant].append(record)
            print(f"repeat {repeat + 1}/{args.repeats} {variant:<17} {seconds:7.2f} s  peak {peak_mb:7.0f} MB", file=sys.stderr)
    return records


def _agreement(work: Path, variants: list[str]) -> dict:
    """Region Dice of each variant's last output against the fp32 reference (same grid only)."""
    from brainseg.labels import REGIONS, region_masks
    from brainseg.metrics import dice
    from brainseg.scoring import load_labels

    reference, _, _ = load_labels(work / "brainseg-fp32.nii.gz")
    ref_regions = region_masks(reference)
    out = {}
    for variant in variants:
        if variant in ("brainseg-fp32", "monai-1mm", "uniform-1mm"):
            continue  # the 1 mm baselines run a different grid: timing only
        labels, _, _ = load_labels(work / f"{variant}.nii.gz")
        regions = region_masks(labels)
        out[variant] = {r: dice(regions[r], ref_regions[r]) for r in REGIONS}
    return out


def _report(records: dict, agreement: dict, case: Path, checkpoint: Path) -> dict:
    import torch

    summary = {}
    for variant, runs in records.items():
        stages = {}
        for key in runs[0].get("seconds", {}):
            stages[key] = statistics.median(r["seconds"][key] for r in runs)
        summary[variant] = {
            "wall_seconds_median": statistics.median(r["wall_seconds"] for r in runs),
            "wall_seconds_all": [round(r["wall_seconds"], 3) for r in runs],
            "peak_rss_mb_median": statistics.median(r["peak_rss_mb"] for r in runs),
            "stage_seconds_median": stages,
            "windows": runs[0].get("windows"),
            "precision": runs[0].get("precision"),
            **({"unpredicted_share": runs[0]["unpredicted_share"]} if "unpredicted_share" in runs[0] else {}),
        }
    base = summary["brainseg"]["wall_seconds_median"]
    for variant in summary:
        summary[variant]["slower_than_brainseg"] = round(summary[variant]["wall_seconds_median"] / base, 2)
    return {
        "case": case.name,
        "checkpoint": checkpoint.name,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "repeats": len(next(iter(records.values()))),
        "variants": summary,
        "agreement_dice_vs_fp32": agreement,
    }


def _print_report(report: dict) -> None:
    print(f"case {report['case']}, checkpoint {report['checkpoint']}, {report['machine']['processor']} x{report['machine']['cpus']}, "
          f"torch {report['machine']['torch']}, {report['repeats']} repeat" + ("s (medians)" if report["repeats"] > 1 else " (one run: no median)"))
    print(f"{'variant':<18}{'wall s':>8}{'x ours':>8}{'peak MB':>9}{'windows':>9}  stages (s)")
    for name, v in report["variants"].items():
        stages = " ".join(f"{k}={s:.2f}" for k, s in v["stage_seconds_median"].items())
        print(f"{name:<18}{v['wall_seconds_median']:>8.2f}{v['slower_than_brainseg']:>8.2f}{v['peak_rss_mb_median']:>9.0f}{v['windows'] or 0:>9}  {stages}")
    for name, d in report["agreement_dice_vs_fp32"].items():
        print(f"agreement {name} vs brainseg-fp32: " + " ".join(f"{r} {x:.4f}" for r, x in d.items()))
    for name, v in report["variants"].items():
        if "unpredicted_share" in v:
            print(f"{name}: {100 * v['unpredicted_share']:.1f}% of the volume never predicted")


# ---- baseline workers: each runs in its own process -------------------------------------------


def _worker(variant: str, case_dir: str, checkpoint: str, out: str, stats_path: str, device: str) -> None:
    import numpy as np
    import torch

    from brainseg.checkpoint import load_checkpoint
    from brainseg.inference import forward_padded, resolve_device
    from brainseg.io import load_case
    from brainseg.labelmaps import save_labels
    from brainseg.pipeline import labels_on_input_grid
    from brainseg.preprocess import prepare, zscore

    seconds = {}
    t = time.perf_counter()
    case = load_case([case_dir])
    seconds["load"] = time.perf_counter() - t
    loaded = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    model = loaded.model.to(dev).eval()
    if variant.startswith("monai"):  # benchmark-only dependency; the uniform loop runs without it
        from monai.inferers import sliding_window_inference

    extra = {}
    t = time.perf_counter()
    if variant == "monai-model-grid":
        prepared = prepare(case, loaded.config.preprocess)
        seconds["preprocess"] = time.perf_counter() - t
        settings = loaded.config.inference
        t = time.perf_counter()
        image = prepared.image[None].to(dev)
        padded = functools.partial(forward_padded, model, divisor=model.divisor)  # as our predictor pads
        with torch.no_grad():
            logits = sliding_window_inference(image, settings.patch_size, 1, padded, overlap=settings.overlap, mode="gaussian")[0].cpu()
        seconds["windows"] = time.perf_counter() - t
        config = loaded.config
        # the labels as brainseg makes them from its own windows: only the stitching differs
        full, _, _ = labels_on_input_grid(logits, prepared, config.model.output_mode, config.inference.threshold,
                                          config.postprocess, seconds)
        t = time.perf_counter()
        save_labels(full, case, out, case.convention)
        seconds["save"] = time.perf_counter() - t
    else:
        # 1 mm, whole volume, no brain crop: the replaced app's set-up
        stacked = np.stack([zscore(case.images[m], case.images[m] != 0) for m in loaded.config.preprocess.modalities])
        image = torch.from_numpy(stacked)[None].to(dev)
        seconds["preprocess"] = time.perf_counter() - t
        patch = (128, 128, 64)
        t = time.perf_counter()
        with torch.no_grad():
            if variant == "monai-1mm":
                logits = sliding_window_inference(image, patch, 1, model, overlap=0.5, mode="gaussian")[0]
                extra["windows"] = int(np.prod([-(-(s - p) // (p // 2)) + 1 for s, p in zip(image.shape[2:], patch)]))
            else:
                logits, covered, n = _uniform_windows(model, image, patch, stride=(64, 64, 32))
                extra["windows"] = n
                extra["unpredicted_share"] = float(1 - covered.float().mean())
        seconds["windows"] = time.perf_counter() - t
        del logits
    Path(stats_path).write_text(json.dumps({"seconds": seconds, "precision": "fp32", **extra}))


def _uniform_windows(model, image, patch, stride):
    """The replaced app's loop: windows only where they fit, uniform averaging."""
    import itertools

    import torch

    shape = image.shape[2:]
    # a volume smaller than the patch gets no window at all there: nothing predicted
    out = torch.zeros((model.config.out_channels,) + tuple(shape), device=image.device)
    count = torch.zeros(shape, device=image.device)
    starts = [range(0, s - p + 1, st) for s, p, st in zip(shape, patch, stride)]
    n = 0
    for x, y, z in itertools.product(*starts):
        sl = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
        pred = model(image[(slice(None), slice(None)) + sl])[0]
        out[(slice(None),) + sl] += pred
        count[sl] += 1
        n += 1
    return out / count.clamp(min=1), count > 0, n


if __name__ == "__main__":
    _worker(*sys.argv[1:7])
