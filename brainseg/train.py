"""Training: tumour-aware patches, augmentation (brainseg.augment: TorchIO per patch, or torch per batch on
the GPU), Dice + CE, validation on whole cases.

Runs alone or under ``torchrun`` (DistributedDataParallel: gloo on CPU, NCCL on CUDA); rank 0
validates, logs and writes checkpoints.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from brainseg import __version__
from brainseg.augment import augment_batch, augment_patch, choose_engine, torchio_transform
from brainseg.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from brainseg.config import BrainsegConfig, SettingError, TrainConfig, to_plain
from brainseg.data import find_cases, load_reference, load_training_cases, sample_patch
from brainseg.errors import InputError
from brainseg.files import atomic_write, check_can_create
from brainseg.inference import cpu_supports_bf16
from brainseg.labels import REGIONS, region_masks
from brainseg.losses import dice_ce_loss
from brainseg.metrics import dice, hd95
from brainseg.model import UNet3D
from brainseg.naming import case_problem
from brainseg.preprocess import prepare
from brainseg.report import to_json
from brainseg.run_config import RETRAINABLE, WEIGHT_BOUND, resume_state

log = logging.getLogger(__name__)

# the validation split of issue 3's calibration run (plain U-Net, 20 minutes: model card), kept fixed so scores
# compare across checkpoints
DEFAULT_VALIDATION = ("Brats18_2013_11_1", "Brats18_CBICA_AME_1", "Brats18_TCIA01_201_1", "Brats18_TCIA02_606_1")
VALIDATION_SHARE = 0.2  # of the cases, drawn with the seed, for data that lacks DEFAULT_VALIDATION's cases


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


PREPROCESS_WAIT_HOURS = 6
# fp16 loss scaling skips a step whose gradients overflow and halves its scale; this many in a row is divergence
MAX_SKIPPED_FP16_STEPS = 30


def setup_distributed() -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return Distributed(dist.get_rank(), world, device)


def warmup_steps(config: TrainConfig) -> int:
    """The warm-up's length: at most a tenth of the run, so a short run reaches its learning rate."""
    return min(config.warmup_steps, config.max_steps // 10)


def clock_share(config: TrainConfig, minutes: float, start: float = 0.0) -> float:
    """The time limit's share of the decay, 0 to 1 (``start`` without a limit).

    ``start`` is the share a resumed run had reached: the limit counts again from the resumption (README),
    so this run's minutes spread over the decay that is left rather than restarting it. A run that had
    reached its limit (``_resume`` gives 0 then) decays again from the peak, a warm restart.
    """
    if not config.time_limit_minutes:
        return start
    return min(start + (1 - start) * minutes / config.time_limit_minutes, 1.0)


def schedule_progress(step: int, config: TrainConfig, minutes: float = 0.0, start: float = 0.0) -> float:
    """How far the learning-rate decay is, 0 to 1: the steps' share of the run after the warm-up or the
    clock's (``clock_share``), whichever is further. A run resumed with more --max-steps goes by its new
    length, as a longer run would be at that step; a clock that had run down stays run down."""
    warmup = warmup_steps(config)
    steps = (step - warmup) / max(config.max_steps - warmup, 1)
    return min(max(steps, clock_share(config, minutes, start)), 1.0)


def learning_rate(step: int, config: TrainConfig, minutes: float = 0.0, start: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak along ``schedule_progress``.

    The warm-up takes at most a tenth of the run, so a short run reaches its learning rate. With a time
    limit the decay follows whichever is further along, steps or time, so a run cut short by the clock
    still ends annealed.
    """
    warmup = warmup_steps(config)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * schedule_progress(step, config, minutes, start))))


def shared_minutes(started: float, ddp: Distributed) -> float:
    """Minutes since ``started``; under DDP rank 0's, so every rank takes the same time-limit and LR decisions.

    Each rank's own clock would drift: one rank could stop to validate while another starts the next
    gradient all-reduce, and both would wait forever.
    """
    minutes = (time.time() - started) / 60
    if ddp.world > 1:
        shared = torch.tensor([minutes], dtype=torch.float64, device=ddp.device)
        dist.broadcast(shared, 0)
        minutes = float(shared.item())
    return minutes


def _random_streams(seed: int, rank: int, start_step: int) -> tuple[np.random.Generator, int]:
    """The patch sampler and the augmentation generator's seed of one process. A resumed run draws on
    from its step, rather than replaying the patches and augmentations of the first part's first steps;
    a fresh run keeps the streams runs have always had (seed + 1000 x rank)."""
    if start_step == 0:
        if rank:  # after the model's initial weights (the same on every rank): each rank's own dropout
            torch.manual_seed(seed + 1000 * rank)
        return np.random.default_rng(seed + 1000 * rank), seed + 1000 * rank
    rng = np.random.default_rng([seed, rank, start_step])
    torch.manual_seed(int(rng.integers(2**62)))  # dropout, too, goes on rather than repeating
    return rng, int(rng.integers(2**62))


RUN_FILES = ("state.pt", "last.pt", "metrics.csv")  # what makes a folder hold a run


# what a run resumed into another folder brings along, so its best checkpoint and history stay with it
CARRIED = ("best.pt", "best_validation.json", "metrics.csv")


def _record_run(out_dir: Path, tc: TrainConfig, config: BrainsegConfig, train_sources, val_sources, carried_from: Path | None) -> None:
    """Write the run's split.json and config.json (and, resumed from another folder, that run's best
    checkpoint and metrics log) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    split = {"train": [s.name for s in train_sources], "validation": [s.name for s in val_sources]}
    (out_dir / "split.json").write_text(json.dumps(split, indent=2))
    # absolute paths, so `brainseg train --config RUN/config.json` repeats the run from any folder
    recorded = replace(tc, **{k: str(Path(v).absolute()) for k in ("data", "init") if (v := getattr(tc, k))})
    (out_dir / "config.json").write_text(json.dumps({"train": to_plain(asdict(recorded)), "model": config.to_dict()}, indent=2))
    for name in CARRIED if carried_from is not None else ():
        if (carried_from / name).is_file():
            shutil.copy2(carried_from / name, out_dir / name)


@dataclass(frozen=True)
class _Standing:
    """Where a run stands after a validation round: what its state.pt saves beside the weights and a --resume
    goes on from."""

    step: int = 0
    best_score: float = -1.0
    seconds: float = 0.0  # of training, over every part of a resumed run
    stale: int = 0  # validations since the best one, for --patience
    clock: float = 0.0  # the time limit's share of the decay, ``clock_share``

    def saved(self) -> dict:
        return {"step": self.step, "best_score": self.best_score, "seconds": self.seconds, "stale": self.stale,
                "clock_share": self.clock}


def _resume(path: Path, train_config: TrainConfig, model: UNet3D, optimizer: torch.optim.Optimizer) -> _Standing:
    """Load the training state ``path`` (``--resume``'s state.pt) into the model and optimiser; returns where
    that run stood.

    Raises InputError naming the file when it is not a training state or holds weights of another network
    than the options build; SettingError when --max-steps asks for no more steps than it has done.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # torch raises several types for files that are not its own
        raise InputError(f"{path}: cannot be read as a training state ({type(exc).__name__}: truncated, or not "
                         f"a state.pt written by brainseg train); expected the state.pt of a run folder") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "best_score"} <= set(state):
        raise InputError(f"{path}: holds no training state; expected the state.pt of a run folder (best.pt and "
                         f"last.pt are checkpoints: start a new run from one with --init)")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError):
        raise InputError(f"{path}: its weights do not fit the network these settings build; resume without "
                         f"model options (the run's config.json beside it gives them), or with --config and the "
                         f"config.json of the run that wrote it") from None
    step = int(state["step"])
    if step >= train_config.max_steps:
        raise SettingError("max_steps", f"got {train_config.max_steps}, but {train_config.resume} has done {step} "
                                        f"steps already; expected more steps than that to resume")
    log.info("resumed from %s at step %d", path, step)
    clock = float(state.get("clock_share", 0.0))  # a state saved before the share was kept: its steps decide
    if clock >= 1.0:  # the run had reached its time limit: continuing it means training on, from the peak again
        log.info("%s reached its time limit: the learning rate decays again from its peak over this run", path)
        clock = 0.0
    return _Standing(step, float(state["best_score"]), float(state.get("seconds", 0.0)), int(state.get("stale", 0)), clock)


def validate(model: UNet3D, config: BrainsegConfig, cases: list, device: torch.device) -> dict:
    """Whole-case inference with the real pipeline; Dice and HD95 per region against full-resolution labels."""
    from brainseg.inference import ModelPredictor
    from brainseg.pipeline import segment_case

    loaded = LoadedModel(model, config)
    predictor = ModelPredictor(model, device, share=False)  # the weights change between validations
    per_case = {}
    for case_id, case, reference, prepared in cases:
        result = segment_case(case, loaded, device=device.type, predictor=predictor, prepared=prepared)
        pred_regions, ref_regions = region_masks(result.labels), region_masks(reference)
        per_case[case_id] = {
            r: {"dice": dice(pred_regions[r], ref_regions[r]), "hd95": hd95(pred_regions[r], ref_regions[r], case.spacing)}
            for r in REGIONS
        }
    model.train()
    mean = {r: float(np.mean([c[r]["dice"] for c in per_case.values()])) for r in REGIONS}
    mean_hd = {r: float(np.mean([c[r]["hd95"] for c in per_case.values()])) for r in REGIONS}
    return {"per_case": per_case, "dice": mean, "hd95": mean_hd, "score": float(np.mean(list(mean.values())))}


def settings_from(init: str, start: BrainsegConfig, given: BrainsegConfig | None) -> BrainsegConfig:
    """The settings of a run that starts from the weights of checkpoint ``init`` (its settings ``start``):
    its network and preprocessing, since its weights need them, but for the ones a fine-tune may change
    (``run_config.RETRAINABLE``: which scans N4 corrects, said with a warning); inference and
    post-processing as ``given``."""
    if given is None:
        return start
    bound = {section: replace(getattr(start, section), **{k: getattr(getattr(given, section), k)
                                                          for k in RETRAINABLE.get(section, ())})
             for section in WEIGHT_BOUND}
    if any(getattr(given, section) != kept for section, kept in bound.items()):
        log.warning("--init %s: using its model and preprocessing settings, not the ones given", init)
    preprocess = bound["preprocess"]
    if preprocess.bias_correction != start.preprocess.bias_correction:
        log.warning("--init %s: fine-tuning with N4 bias-field correction of %s, where its weights were trained "
                    "with %s: they adapt to the change as they train", init,
                    ", ".join(preprocess.bias_correction) or "no scan", ", ".join(start.preprocess.bias_correction) or "none")
    return replace(given, **bound)


def train(train_config: TrainConfig, model_config: BrainsegConfig | None = None, progress: bool = True) -> Path:
    """Train a U-Net and write ``best.pt`` and ``last.pt`` (brainseg checkpoints) to the output folder.

    Returns the path of ``best.pt``. ``progress``: a progress bar and one line per validation on stderr
    (else those lines go to the log). Raises SettingError for settings that do not fit together and
    InputError for unusable data, before any case is read.
    """
    ddp = setup_distributed()
    config, initial = _run_settings(train_config, model_config)
    out_dir = Path(train_config.output)
    state_path, moving = _check_output(train_config, out_dir)
    resumed_from = state_path.parent if state_path else None
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    torch.manual_seed(train_config.seed)
    # the model, optimiser and resumed state come before the data, so a bad setting fails in seconds
    model = (initial.model if initial is not None else UNet3D(config.model)).to(ddp.device)
    train_config.check_fits(model.config)
    engine = choose_engine(train_config.augmentation, ddp.device) if train_config.augment else None  # before the data
    transform = torchio_transform() if engine == "torchio" else None
    as_run = replace(train_config, augmentation=engine) if engine else train_config  # provenance: "auto" resolved
    channels_last = ddp.device.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    prior = _resume(state_path, train_config, model, optimizer) if state_path else _Standing()
    rng, generator_seed = _random_streams(train_config.seed, ddp.rank, prior.step)

    train_sources, val_sources = _split_sources(train_config, resumed_from or out_dir)
    # rank 0 fills the cache and validates while the others wait in a group of their own: torch's 10-30 min
    # default would cut off a first run over a thousand cases, and a longer one for every collective would
    # leave a hung training step hanging for hours
    waiting = dist.new_group(backend="gloo", timeout=timedelta(hours=PREPROCESS_WAIT_HOURS)) if ddp.world > 1 else None
    train_cases, val_cases = _load_cases(train_config, config, train_sources, val_sources, out_dir / "cache", ddp, waiting)
    if ddp.main:  # only now that the cases were read: a resume that fails on the data leaves the run's settings alone
        _record_run(out_dir, train_config, config, train_sources, val_sources, resumed_from if moving else None)
    if ddp.world > 1:  # the others wait for that, too, in the long-timeout group, not in DDP's first broadcast
        dist.barrier(group=waiting)

    net = model
    if ddp.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None)
        if channels_last:  # the 1x1x1 head's weight gradient comes back contiguous: one copy of a few numbers, not a slowdown
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

    amp_dtype = _amp_dtype(train_config, ddp.device)
    step_once = _Stepper(net, optimizer, config.model.output_mode, train_config.grad_clip, amp_dtype, ddp.device)
    generator = torch.Generator(device=ddp.device)
    generator.manual_seed(generator_seed)
    if ddp.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one patch size throughout: worth finding the fastest kernels once
    bar = _progress(train_config.max_steps, prior.step, ddp.main and progress)
    record = _run_record(as_run, train_sources, val_sources, ddp, amp_dtype)
    saver = _Saver(out_dir, as_run, config, model, optimizer, val_cases, record, ddp.device, prior, bar) if ddp.main else None
    started = time.time()
    model.train()
    step = prior.step
    tally = _Tally()
    while step < train_config.max_steps:
        images, targets = _draw_patches(train_cases, train_config, rng, transform)
        x = torch.from_numpy(images).to(ddp.device)
        y = torch.from_numpy(targets).to(ddp.device).float()
        if engine == "torch":
            x, y = augment_batch(x, y, generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        minutes = shared_minutes(started, ddp)  # one clock reading per step: rank 0's, for the LR and the stop
        lr = learning_rate(step, train_config, minutes, prior.clock)
        if not step_once(x, y, lr, tally):
            raise _diverged(train_config, step, out_dir)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{tally.last_loss:.3f}", dice=f"{tally.last_dice:.3f}")
        out_of_time = bool(train_config.time_limit_minutes) and minutes > train_config.time_limit_minutes
        if step % train_config.val_every == 0 or step == train_config.max_steps or out_of_time:
            if not all(torch.isfinite(p).all() for p in model.parameters()):  # every rank: the weights are the same
                raise _diverged(train_config, step - 1, out_dir)  # an update overflowed them: nothing of it is saved
            stop = saver.round(step, lr, tally, minutes, time.time() - started, out_of_time) if saver else False
            tally = _Tally()
            if ddp.world > 1:  # the others wait while rank 0 validates whole cases: longer than torch's default timeout
                flag = torch.tensor([1 if stop else 0])  # gloo: a CPU tensor
                dist.broadcast(flag, 0, group=waiting)
                stop = bool(flag.item())
            if stop:
                break
    bar.close()
    if ddp.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    # a resumed run whose earlier best is not beside it (a bare state.pt) and that never beat it has no best.pt
    return out_dir / "best.pt" if (out_dir / "best.pt").is_file() else out_dir / "last.pt"


class _Stepper:
    """One optimisation step: autocast forward, Dice + CE, (scaled) backward, clipping, the update.

    Called with a batch and the step's learning rate; False when the run diverged (the all-reduced gradient
    norm not finite: every rank decides alike), which fp16's loss scaler is allowed a few steps in a row.
    """

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, output_mode: str, grad_clip: float,
                 amp_dtype: torch.dtype | None, device: torch.device):
        self.net, self.optimizer, self.output_mode, self.grad_clip = net, optimizer, output_mode, grad_clip
        self.amp_dtype, self.device_type = amp_dtype, device.type
        # fp16 gradients underflow without loss scaling; the scale recalibrates in a few steps, so a resumed run starts afresh
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.allowed = MAX_SKIPPED_FP16_STEPS if self.scaler.is_enabled() else 0
        self.skipped = 0  # steps in a row whose gradients were not finite

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float, tally: _Tally) -> bool:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.net(x)
        loss, soft = dice_ce_loss(logits, y, self.output_mode)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.skipped = 0 if torch.isfinite(norm) else self.skipped + 1
        if self.skipped > self.allowed:
            return False
        self.scaler.step(self.optimizer)  # skips the update itself when fp16 gradients overflowed
        self.scaler.update()
        tally.add(float(loss.detach()), float(soft))
        return True


class _Saver:
    """Rank 0's validation rounds: validate, log, write last.pt, best.pt when the score improved, and the
    state a --resume continues from; says when the run should stop (time limit, --patience)."""

    def __init__(self, out_dir: Path, as_run: TrainConfig, config: BrainsegConfig, model: UNet3D,
                 optimizer: torch.optim.Optimizer, val_cases: list, record: dict, device: torch.device,
                 prior: _Standing, bar):
        """``record``: what every checkpoint of the run says of it (``_run_record``)."""
        self.out_dir, self.as_run, self.config, self.model, self.optimizer = out_dir, as_run, config, model, optimizer
        self.val_cases, self.record, self.device, self.prior, self.bar = val_cases, record, device, prior, bar
        self.best_score, self.stale = prior.best_score, prior.stale

    def round(self, step: int, lr: float, tally: _Tally, minutes: float, seconds: float, out_of_time: bool) -> bool:
        """One validation round after ``step``; ``seconds`` this process has trained. True: stop the run."""
        tc, out_dir = self.as_run, self.out_dir
        result = validate(self.model, self.config, self.val_cases, self.device) if self.val_cases else _not_validated()
        elapsed = self.prior.seconds + seconds
        row = _metrics_row(step, elapsed, lr, tally, result)
        _append_csv(out_dir / "metrics.csv", row)
        provenance = {**self.record, "step": step, "training_seconds": round(elapsed, 1),
                      "validation": {k: result[k] for k in ("dice", "hd95", "score")}}
        save_checkpoint(out_dir / "last.pt", self.model, self.config, provenance)
        if result["score"] > self.best_score or not self.val_cases:
            self.best_score, self.stale = result["score"], 0
            save_checkpoint(out_dir / "best.pt", self.model, self.config, provenance)
            (out_dir / "best_validation.json").write_text(to_json(result))  # no validation: null, not NaN
        else:
            self.stale += 1
        standing = _Standing(step, self.best_score, elapsed, self.stale, clock_share(tc, minutes, self.prior.clock))
        _save_state(out_dir, {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                              **standing.saved()})
        _plot(out_dir / "metrics.csv", out_dir / "curves.png")
        scores = (f"val Dice WT {result['dice']['WT']:.3f} TC {result['dice']['TC']:.3f} ET {result['dice']['ET']:.3f}"
                  if self.val_cases else "no validation cases")
        self.bar.write(f"step {step}: loss {row['loss']:.3f} {scores}", file=sys.stderr)  # stdout is the caller's
        return out_of_time or (tc.patience > 0 and self.stale >= tc.patience)


def _run_settings(train_config: TrainConfig, model_config: BrainsegConfig | None) -> tuple[BrainsegConfig, LoadedModel | None]:
    """The run's settings, and the checkpoint whose weights it starts from (``--init``; None otherwise)."""
    config = model_config or BrainsegConfig()
    initial = None
    if train_config.init and not train_config.resume:
        initial = load_checkpoint(train_config.init)
        config = settings_from(train_config.init, initial.config, model_config)
        log.info("weights from %s", train_config.init)
        if config.preprocess.bias_correction == initial.config.preprocess.bias_correction != ():
            log.info("N4 bias-field correction of %s before z-scoring, as %s's preprocessing (once per case, for "
                     "the cache)", ", ".join(config.preprocess.bias_correction), train_config.init)
    # windows the size the network was trained on: with InstanceNorm, larger windows full of
    # zero padding shift the statistics (validation Dice fell from 0.86 to 0.47 WT on one case)
    config = replace(config, inference=replace(config.inference, patch_size=tuple(train_config.patch_size)))
    config.check_consistent()
    return config, initial


def _check_output(train_config: TrainConfig, out_dir: Path) -> tuple[Path | None, bool]:
    """(the state.pt resumed from, whether it is resumed into another folder); InputError for an output
    folder that cannot be written or holds another run."""
    check_can_create([out_dir / "config.json"])
    state = resume_state(train_config.resume) if train_config.resume else None
    moving = state is not None and state.parent.resolve() != out_dir.resolve()
    earlier = [name for name in RUN_FILES if (not train_config.resume or moving) and (out_dir / name).exists()]
    if earlier:  # a second run there would replace the first's checkpoints and mix the two in one metrics log
        raise InputError(f"{out_dir}: holds an earlier run ({', '.join(earlier)}); continue it with --resume {out_dir}, "
                         f"or choose another --output")
    return state, moving


def _split_sources(train_config: TrainConfig, run_dir: Path) -> tuple[list, list]:
    """The data folder's cases, split into (training, validation); the split is read from ``run_dir``'s
    split.json when it has one."""
    if not str(train_config.data):
        raise InputError("data: no folder of labelled cases given; expected TrainConfig(data=FOLDER) or --data FOLDER")
    sources = find_cases(train_config.data)
    validation = validation_split([s.name for s in sources], train_config, run_dir / "split.json")
    train_sources = [s for s in sources if s.name not in validation]
    if not train_sources:
        raise InputError(f"{train_config.data}: no training cases left after the validation split")
    return train_sources, [s for s in sources if s.name in validation]


def _load_cases(train_config: TrainConfig, config: BrainsegConfig, train_sources, val_sources, cache: Path,
                ddp: Distributed, waiting) -> tuple[list, list]:
    """(training cases on the model grid, validation cases with their prepared inputs: rank 0's only).

    Rank 0 fills the cache first and the other ranks read it, rather than all writing the same files at once.
    """
    if not ddp.main:
        dist.barrier(group=waiting)
    train_cases = load_training_cases(train_sources, config.preprocess, cache, train_config.label_convention)
    if ddp.main and ddp.world > 1:
        dist.barrier(group=waiting)
    val_cases = [(s.name, *load_reference(s, train_config.label_convention)) for s in val_sources] if ddp.main else []
    # prepared once: the preprocessing stays fixed while the weights change, and N4 takes seconds per scan
    return train_cases, [(name, case, reference, prepare(case, config.preprocess)) for name, case, reference in val_cases]


def _amp_dtype(train_config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast type of the run: None without --amp, or where neither bf16 nor (CUDA) fp16 helps."""
    if not train_config.amp:
        return None
    if device.type == "cuda":
        # bf16 runs natively from Ampere (compute capability 8) on; emulated, it is slower than fp16 with a scaler
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else None


def _draw_patches(train_cases: list, train_config: TrainConfig, rng: np.random.Generator,
                  transform) -> tuple[np.ndarray, np.ndarray]:
    """One batch of (images, targets) patches from random cases, TorchIO-augmented when ``transform`` is given."""
    images, targets = [], []
    for _ in range(train_config.batch_size):
        item = train_cases[rng.integers(len(train_cases))]
        image, target = sample_patch(item, train_config.patch_size, rng, train_config.tumour_share)
        if transform is not None:
            image, target = augment_patch(transform, image, target, rng)
        images.append(image)
        targets.append(target)
    return np.stack(images), np.stack(targets)


@dataclass
class _Tally:
    """The training loss and soft Dice summed since the last validation."""

    loss: float = 0.0
    dice: float = 0.0
    steps: int = 0
    last_loss: float = 0.0  # the latest step's, for the progress bar
    last_dice: float = 0.0

    def add(self, loss: float, dice: float) -> None:
        self.loss, self.dice, self.steps = self.loss + loss, self.dice + dice, self.steps + 1
        self.last_loss, self.last_dice = loss, dice


def _not_validated() -> dict:
    """A validation result for a run without validation cases: NaN scores (null in JSON)."""
    return {"dice": {r: float("nan") for r in REGIONS}, "hd95": {r: float("nan") for r in REGIONS}, "score": float("nan")}


def _metrics_row(step: int, elapsed: float, lr: float, tally: _Tally, result: dict) -> dict:
    """One line of metrics.csv: the training means since the last validation and this validation's scores."""
    return {"step": step, "seconds": round(elapsed, 1), "lr": lr, "loss": tally.loss / tally.steps,
            "train_dice": tally.dice / tally.steps, **{f"val_dice_{r}": result["dice"][r] for r in REGIONS},
            **{f"val_hd95_{r}": result["hd95"][r] for r in REGIONS}, "val_score": result["score"]}


def _save_state(out_dir: Path, state: dict) -> None:
    """The state a --resume continues from; atomic: a run killed while saving keeps its previous state.pt."""
    atomic_write(out_dir / "state.pt", lambda tmp: torch.save(state, tmp))


def _diverged(train_config: TrainConfig, step: int, out_dir: Path) -> SettingError:
    return SettingError("lr", f"got {train_config.lr:g}; training diverged at step {step + 1} (the loss, its gradients "
                              f"or the weights became NaN or infinite) and stopped without saving them; expected a "
                              f"smaller learning rate (checkpoints of earlier validations in {out_dir} are kept)")


def validation_split(names: list[str], tc: TrainConfig, saved: Path | None = None) -> tuple[str, ...]:
    """The validation case ids: a resumed run's (from its ``saved`` split.json), else those named (none
    for ``()``), else the fixed BraTS 2018 split when the data holds it, else a fifth of the cases drawn
    with the seed.

    Raises InputError listing the folder's cases when a named case is not among them, or when a resumed
    run is given another split than it began with.
    """
    chosen = tc.validation
    if tc.resume and saved is not None and saved.is_file():
        try:
            before = tuple(json.loads(saved.read_text())["validation"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(f"{saved}: not the split.json brainseg train writes; expected "
                             f"{{\"train\": [...], \"validation\": [...]}}") from None
        if chosen is not None and tuple(chosen) != before:
            raise InputError(f"--validation {' '.join(chosen) or '(none)'}: the resumed run validated on "
                             f"{', '.join(before) or 'no cases'} ({saved}); resume with its split or start a new run")
        chosen = before
    if chosen is not None:
        unknown = [v for v in chosen if v not in names]
        if unknown:
            # a folder of that name that is no labelled case says why, rather than seeming absent
            why = [f"{v}: {problem}" for v in unknown if (Path(tc.data) / v).is_dir() and (problem := case_problem(Path(tc.data) / v))]
            raise InputError(f"{tc.data}: holds no validation case {', '.join(unknown)}; name cases of this folder "
                             f"with --validation (it holds {', '.join(names[:5])}{' ...' if len(names) > 5 else ''})"
                             + (f" ({'; '.join(why)})" if why else ""))
        return tuple(chosen)
    if set(DEFAULT_VALIDATION) <= set(names):
        return DEFAULT_VALIDATION
    if len(names) < 2:
        raise InputError(f"{tc.data}: holds {len(names)} labelled case; training needs at least one more for validation")
    count = max(1, round(VALIDATION_SHARE * len(names)))
    drawn = tuple(sorted(np.random.default_rng(tc.seed).choice(sorted(names), count, replace=False).tolist()))
    log.info("validation split: %d of %d cases drawn with seed %d (name them with --validation)", count, len(names), tc.seed)
    return drawn


def _run_record(tc: TrainConfig, train_sources, val_sources, ddp: Distributed, amp_dtype) -> dict:
    """The provenance every checkpoint of a run carries; each validation round adds its step, time and scores."""
    import platform

    return {
        "brainseg_version": __version__,
        "trained_with": "brainseg train",
        "train_cases": [s.name for s in train_sources],
        "validation_cases": [s.name for s in val_sources],
        "data": str(tc.data),
        "hardware": f"{platform.processor() or platform.machine()}, {ddp.world} process(es), "
                    f"{torch.cuda.get_device_name(ddp.device) if ddp.device.type == 'cuda' else 'cpu'}, {torch.get_num_threads()} threads, "
                    f"{'fp32' if amp_dtype is None else str(amp_dtype).removeprefix('torch.') + ' autocast'}",
        "train_config": to_plain(asdict(tc)),
    }


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _plot(metrics_path: Path, png: Path) -> None:
    try:  # a Figure of its own, not pyplot: the caller's backend (a notebook's inline one) stays as it is
        from matplotlib.figure import Figure
    except ImportError:
        return
    with metrics_path.open() as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig = Figure(figsize=(10, 4))
    a, b = fig.subplots(1, 2)
    a.plot(steps, [float(r["loss"]) for r in rows], label="train loss")
    a.set_xlabel("step")
    a.legend()
    for r in REGIONS:
        values = [float(row[f"val_dice_{r}"]) for row in rows]
        if not all(math.isnan(v) for v in values):  # a run without validation cases has none to draw
            b.plot(steps, values, label=f"val Dice {r}")
    b.plot(steps, [float(r["train_dice"]) for r in rows], "--", label="train soft Dice")
    b.set_xlabel("step")
    b.set_ylim(0, 1)
    b.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)


class _NullProgress:
    def update(self, n): pass
    def set_postfix(self, **kw): pass
    def write(self, s, file=None): log.info(s)
    def close(self): pass


def _progress(total: int, initial: int, main: bool):
    if not main:
        return _NullProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NullProgress()
    return tqdm(total=total, initial=initial, desc="train", mininterval=5)
