"""The one Accelerate loop that trains every variant: setup -> fit -> finish.

    accelerator = make_accelerator(cfg)
    summary = train(cfg, accelerator, built, data, tokenized, run_dir, console)

Batch arithmetic: each process runs `train.micro_batch_size` examples per forward/backward and
accumulates `train.global_batch_size / (micro_batch_size x processes)` of them per optimizer step
(`accelerator.accumulate`, which also steps at the end of every epoch). Loss is multi-label BCE on
float32 logits; the trainable parameters are float32 and the forward runs under accelerate's autocast,
except under DeepSpeed, which casts the whole model to its half precision and keeps float32 master
weights in the optimizer. The topology itself comes from the accelerate config (`emodist.distributed`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from scipy.special import expit
from torch.utils.data import DataLoader

from emodist import data as data_mod
from emodist import distributed, evaluation
from emodist.config import OptimConfig, RunConfig
from emodist.data import sampling
from emodist.models import BuiltModel, is_head_parameter
from emodist.report import telemetry, tracking
from emodist.report.console import Console
from emodist.rundir import checkpoints, contract
from emodist.runtime import files, hostmem
from emodist.runtime.errors import Diverged, Preempted, UsageError
from emodist.runtime.signals import StopSignals
from emodist.scoring import thresholds
from emodist.scoring.metrics import HEADLINE
from emodist.serve import model_dir

HALF_BASE_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}
EVALUATIONS = 8
"""Dev evaluations per run when train.eval_every_steps is unset (the last one at the end): the points of
the dev curves. data.max_eval_examples makes each one cheaper; train.eval_every_steps=0 leaves only the last."""


def make_accelerator(cfg: RunConfig) -> Accelerator:
    """The Accelerator for `cfg` under the launcher's topology: precision resolved for the hardware,
    accumulation derived, the support matrix checked, DeepSpeed's "auto" values filled, seeds set."""
    accelerator = Accelerator(mixed_precision=resolve_precision(cfg),
                              # pinned host batches (see `setup`) copy to a GPU without stalling the host
                              dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
                              **distributed.accelerator_kwargs())
    accelerator.gradient_accumulation_steps = cfg.train.gradient_accumulation_steps(accelerator.num_processes)
    distributed.check_support(cfg, distributed.Topology.of(accelerator))
    distributed.fill_deepspeed_config(cfg, accelerator)
    if accelerator.device.type == "cpu":
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(cfg.train.cpu_threads or max(1, len(os.sched_getaffinity(0)) // local_processes))
        hostmem.keep_freed_memory()  # steps reuse the pages the last one freed instead of faulting them in
    set_seed(cfg.train.seed)
    return accelerator


def check_data_fits(cfg: RunConfig, data: data_mod.EmotionData, accelerator: Accelerator) -> None:
    """Refuse a train split too small for one optimizer step (one example per micro-batch, on every rank)."""
    per_step = accelerator.num_processes * accelerator.gradient_accumulation_steps
    size = len(data.splits["train"])
    if size < per_step:
        capped = " (data.max_train_examples)" if cfg.data.max_train_examples is not None else ""
        raise UsageError(
            f"the train split has {size} example(s){capped}, fewer than the {per_step} micro-batches of one optimizer "
            f"step ({accelerator.num_processes} process(es) x {accelerator.gradient_accumulation_steps} accumulated, "
            f"from train.global_batch_size={cfg.train.global_batch_size} / train.micro_batch_size="
            f"{cfg.train.micro_batch_size}): train on at least {per_step} examples, or lower train.global_batch_size")


def resolve_precision(cfg: RunConfig) -> str:
    """The accelerate `mixed_precision` for `cfg` on this machine (see train.mixed_precision)."""
    requested = cfg.train.mixed_precision
    if requested == "auto":
        # a half-precision base computes in that precision whatever the hardware: autocast it to match
        # the float32 trainable head (config validation refuses any other explicit choice)
        requested = HALF_BASE_PRECISION.get(cfg.model.dtype, "auto") if cfg.model.quantization == "none" else "auto"
        if cfg.model.quantization == "nf4" and distributed.launched_zero_stage() == 3:
            # ZeRO-3 trains a 4-bit base stored in its compute dtype, and keeps float32 masters only
            # when DeepSpeed's own half precision is on
            requested = HALF_BASE_PRECISION.get(cfg.model.compute_dtype, "no")
    cuda = torch.cuda.is_available()
    if requested == "fp16" and not cuda:
        raise UsageError("train.mixed_precision=fp16 needs a CUDA GPU (model.dtype=float16 too): use bf16 or no")
    if requested != "auto":
        return requested
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); False where it cannot tell."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


@dataclass
class Plan:
    """How many steps the run makes, derived once from the config and the data."""

    batches_per_epoch: int
    """Micro-batches per epoch on each process."""
    accumulation: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_every: int
    """Evaluate on dev every this many steps (0: only at the end): train.eval_every_steps, else an
    `EVALUATIONS`th of the run."""

    @classmethod
    def make(cls, cfg: RunConfig, batches_per_epoch: int, accumulation: int) -> Plan:
        steps_per_epoch = math.ceil(batches_per_epoch / accumulation)
        total = steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            total = min(total, cfg.train.max_steps)
        every = cfg.train.eval_every_steps
        if every is None:
            every = max(1, math.ceil(total / EVALUATIONS))
        return cls(batches_per_epoch, accumulation, steps_per_epoch, total, round(cfg.optim.warmup_ratio * total),
                   every)


@dataclass
class Session:
    """Everything the loop functions share; `step` counts optimizer steps."""

    cfg: RunConfig
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loaders: dict[str, DataLoader]
    labels: list[str]
    plan: Plan
    topology: distributed.Topology
    run: contract.Run
    console: Console
    logger: tracking.MetricLogger | None
    """metrics.jsonl, the console and wandb: started once a resume has loaded (`setup`)."""
    meter: telemetry.Throughput
    phases: telemetry.Phases
    loss_sum: torch.Tensor
    """Sum of the micro-batch losses since the last log, kept on the device (no sync per step)."""
    pos_weight: torch.Tensor | None
    """The BCE weight of each label's positives (train.pos_weight), or None."""
    stop: StopSignals
    batches: sampling.LengthGroupedBatches
    """The train batches of every rank (accelerate deals them out); seeded by train.seed and the epoch."""
    eval_orders: dict[str, np.ndarray]
    """Each eval loader reads its split in this order (shortest first); predictions are put back."""
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    """Micro-batches of the current epoch this rank has trained on (a resume skips them)."""
    last_loss: float = float("nan")
    loss_count: int = 0
    best: dict | None = None
    """The best dev score during training: {"metric", "value", "step"}."""
    started_at: int = 0
    """The step this session (this launch) started from."""
    pending_check: tuple | None = None
    """The last step's all-reduced stop and divergence flags on their way to the host (see `check_step`)."""

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def epochs_done(self) -> float:
        """Epochs trained so far, counted in optimizer steps."""
        return round(self.step / self.plan.steps_per_epoch, 4)


def train(cfg: RunConfig, accelerator: Accelerator, built: BuiltModel, data: data_mod.EmotionData,
          tokenized: dict, run: contract.Run, console: Console, phases: telemetry.Phases | None = None,
          stop: StopSignals | None = None) -> dict:
    """Train (from `run.checkpoint` when there is one), evaluate on dev and test, export `model/`, write
    `summary.json` and `plots/`; return the summary. Raises Preempted on a stop signal, Diverged on a NaN
    loss, NoSpace when the disk fills. `phases`: the times of the phases before training (load, tokenize);
    `stop`: the signal handlers the entry script installed before loading (a signal then stops the run
    after its first step), else installed here."""
    run_dir = run.path
    with StopSignals() if stop is None else contextlib.nullcontext(stop) as stop:
        session = setup(cfg, accelerator, built, data, tokenized, run, console, stop, phases or telemetry.Phases())
        stop.training = True
        summary, error = None, None
        try:
            fit(session)
            stop.finishing = True
            hostmem.release()  # the training steps' freed pages: evaluation and export start from what is live
            summary = finish(session, built, data)
            return summary
        except BaseException as err:
            error = err
            raise
        finally:
            files = [run_dir / "summary.json", run_dir / "metrics.jsonl", *sorted(run_dir.glob("plots/*.png"))]
            session.logger.close(summary, files, tracking.exit_code_of(error))


def setup(cfg: RunConfig, accelerator: Accelerator, built: BuiltModel, data: data_mod.EmotionData,
          tokenized: dict, run: contract.Run, console: Console, stop: StopSignals, phases: telemetry.Phases) -> Session:
    run_dir = run.path
    multiple = cfg.data.pad_to_multiple_of or (8 if accelerator.device.type == "cuda" else 1)
    collate = data_mod.collator(built.tokenizer, multiple)
    batches = sampling.LengthGroupedBatches(data_mod.lengths(tokenized["train"]), cfg.train.micro_batch_size,
                                            accelerator.num_processes, accelerator.gradient_accumulation_steps,
                                            seed=cfg.train.seed, group=cfg.data.group_by_length)
    pin = accelerator.device.type == "cuda"
    loaders = {"train": DataLoader(tokenized["train"], batch_sampler=batches, collate_fn=collate, pin_memory=pin)}
    eval_orders = {}
    for split in ("dev", "test"):  # sorted, batches pad little; predictions go back to split order
        # shortest first: under DDP accelerate fills the last rank's short final batch with the split's
        # first examples, which must not lengthen it (its numbers would then differ from one process's)
        eval_orders[split] = sampling.by_length(data_mod.lengths(tokenized[split]), longest_first=False)
        loaders[split] = DataLoader(tokenized[split].select(eval_orders[split]), collate_fn=collate,
                                    batch_size=cfg.train.eval_batch_size, pin_memory=pin)
    with phases.measure("load"):  # accelerate's prepare wraps, shards or offloads the model: part of loading
        loaders = dict(zip(loaders, accelerator.prepare(*loaders.values()), strict=True))
        plan = Plan.make(cfg, len(loaders["train"]), accelerator.gradient_accumulation_steps)
        topology = distributed.Topology.of(accelerator)
        optimizer = build_optimizer(built.model, cfg.optim, cfg.model.head_modules,
                                    fused=accelerator.state.deepspeed_plugin is None)
        scheduler = build_scheduler(optimizer, cfg.optim, plan, accelerator.num_processes)
        model, optimizer, scheduler = accelerator.prepare(built.model, optimizer, scheduler)
        if cfg.model.method == "lora":
            checkpoints.keep_trainable_only(accelerator, model)
    pos_weight = positive_weights(cfg, data, accelerator.device)
    console.banner(f"emodist · {cfg.variant}{' (smoke)' if cfg.smoke else ''}", banner_rows(
        cfg, accelerator, topology, built, data, plan, pos_weight))
    main = accelerator.is_main_process
    s = Session(cfg, accelerator, model, optimizer, scheduler, loaders, data.labels, plan, topology, run,
                console, None, telemetry.Throughput(accelerator.device), phases,
                torch.zeros((), device=accelerator.device), pos_weight, stop, batches, eval_orders)
    if run.checkpoint is not None:
        restore(s, run.checkpoint)
    # metrics.jsonl and wandb start once a resume has loaded: nothing of the run changes before that
    tracker = tracking.start_wandb(cfg, run_dir, data.labels, topology, console) if main else None
    s.logger = tracking.MetricLogger(run_dir / "metrics.jsonl", console, enabled=main, tracker=tracker)
    return s


def restore(s: Session, checkpoint: Path) -> None:
    """Continue from `checkpoint`: weights, optimizer, scheduler and RNG (accelerate), and the progress."""
    state = checkpoints.load_checkpoint(s.accelerator, checkpoint, trainable_only=s.cfg.model.method == "lora")
    if state["step"] >= s.plan.total_steps:  # before the run directory changes: there is nothing to do
        t = s.cfg.train
        raise UsageError(f"--resume {checkpoint}: nothing left to train: it is at step {state['step']} and this run "
                         f"ends at step {s.plan.total_steps} (train.epochs={t.epochs}, train.max_steps={t.max_steps}): "
                         "raise train.max_steps or train.epochs to train further (nothing was changed)")
    s.step, s.epoch, s.batches_in_epoch, s.best = state["step"], state["epoch"], state["batches_in_epoch"], state["best"]
    rank = s.accelerator.process_index
    s.loss_sum.fill_(state["loss_sum_per_rank"][rank])
    s.loss_count = state["loss_count"]
    s.meter.carry_over(state.get("perf"))
    if s.accelerator.is_main_process:
        s.run.restored(s.cfg, s.step)
    s.accelerator.wait_for_everyone()
    s.console.print(f"resumed from {checkpoint} at step {s.step} (epoch {s.epoch}, batch {s.batches_in_epoch})")


def progress(s: Session) -> dict:
    """What state.json records of a checkpoint taken now (a collective: every rank's loss sum)."""
    loss_sums = s.accelerator.gather(s.loss_sum.detach().float().reshape(1)).tolist()
    train_size = len(s.loaders["train"].dataset)
    seen_this_epoch = s.batches_in_epoch * s.cfg.train.micro_batch_size * s.accelerator.num_processes
    return {
        "step": s.step, "epoch": s.epoch, "batches_in_epoch": s.batches_in_epoch,
        "examples_seen": s.epoch * train_size + min(seen_this_epoch, train_size),
        "best": s.best, "loss_sum_per_rank": loss_sums, "loss_count": s.loss_count,
        **s.topology.identity(),
        "fingerprint": (fp := checkpoints.fingerprint(s.cfg, s.labels)),
        "config_hash": checkpoints.fingerprint_hash(fp),
        "stopped_by": s.stop.received,
        "perf": s.meter.carried(s.accelerator),  # the next session adds its own to these
    }


def fit(s: Session) -> None:
    """Run optimizer steps until the plan's total, evaluating, logging and saving on the way."""
    s.model.train()
    s.started_at = s.step
    s.meter.resume()
    with s.console.progress(s.plan.total_steps, completed=s.step):
        while s.step < s.plan.total_steps:
            for batch in epoch_batches(s):
                train_micro_batch(s, batch)
                s.batches_in_epoch += 1
                if s.accelerator.sync_gradients:
                    s.step += 1
                    after_step(s)
                    if s.step >= s.plan.total_steps:
                        break
            else:
                s.epoch += 1
                s.batches_in_epoch = 0
    s.meter.pause()


def epoch_batches(s: Session):
    """An iterator over the rest of the current epoch: all of it, or what follows the batches a resumed
    run already trained on. The order is the epoch's own (the sampler is seeded by seed + epoch)."""
    loader = s.loaders["train"]
    loader.set_epoch(s.epoch)
    s.batches.set_epoch(s.epoch)  # under DDP accelerate's shard wrapper does not pass the epoch on
    if not s.batches_in_epoch:
        return iter(loader)
    return _rng_neutral(s.accelerator.skip_first_batches(loader, s.batches_in_epoch))


def _rng_neutral(loader):
    """Iterate `loader` without the draw from the global RNG that starting a DataLoader makes: the
    uninterrupted run drew it at the start of the epoch, before the RNG state the checkpoint holds."""
    rng = torch.get_rng_state()
    batches = iter(loader)
    first = next(batches, None)  # the iterator starts (and draws) on the first batch
    torch.set_rng_state(rng)
    if first is not None:
        yield first
        yield from batches


def train_micro_batch(s: Session, batch: dict) -> None:
    with s.accelerator.accumulate(s.model):
        targets = batch.pop("labels")
        logits = s.model(**batch).logits
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=s.pos_weight)
        s.accelerator.backward(loss)
        if s.accelerator.sync_gradients and s.cfg.optim.max_grad_norm > 0:
            s.accelerator.clip_grad_norm_(s.model.parameters(), s.cfg.optim.max_grad_norm)
        s.optimizer.step()
        s.scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
    s.loss_sum += loss.detach()
    s.loss_count += 1
    s.meter.count(batch)


def after_step(s: Session) -> None:
    """Check the loss and the stop signals, then log, evaluate and save at their intervals (everything
    here runs on every rank). Raises Diverged or Preempted."""
    train = s.cfg.train
    last = s.step == s.plan.total_steps
    logs = s.step % train.log_every_steps == 0 or last
    evaluates = bool(s.plan.eval_every) and s.step % s.plan.eval_every == 0 and not last
    saves = (bool(train.save_every_steps) and s.step % train.save_every_steps == 0) or last
    # the session's first step reads its own check: a signal that came while the run loaded stops it there
    stop_requested = check_step(s, now=logs or evaluates or saves or s.step == s.started_at + 1)
    # the host waited for the previous step (or this one): in steady state the clock reads the step's duration
    s.meter.mark_step()
    if logs:
        log_train(s)
    if evaluates:
        scores, _, _ = run_eval(s, "dev", prefix="eval")
        if s.best is None or scores["f1_micro"] > s.best["value"]:
            s.best = {"metric": "eval/f1_micro", "value": scores["f1_micro"], "step": s.step}
            saves = saves or bool(train.save_every_steps)  # a run that saves checkpoints keeps its best one
    if saves or stop_requested:
        checkpoint = save(s)
        if stop_requested:
            raise Preempted(s.stop.received or "a signal on another rank", s.step, checkpoint,
                            f"the same command with --output-dir {shlex.quote(str(s.run_dir))} --resume auto")
    s.console.advance(s.step)


def check_step(s: Session, now: bool) -> bool:
    """Whether any rank was asked to stop; raises Diverged if any rank's loss is no longer finite.

    One small all-reduce per optimizer step carries both answers, so every rank acts on the same step. On
    a GPU its result is copied to pinned host memory without waiting and read one step later, so the host
    never waits for the device on a plain step (the next step is queued while this one runs). `now` (a
    step that logs, evaluates or saves: the host waits there anyway) reads this step's own answer, and so
    does any step whose late answer says stop or diverged: nothing is saved that the check has not seen.
    """
    flags = torch.stack([torch.tensor(float(s.stop.received is not None), device=s.loss_sum.device),
                         (~torch.isfinite(s.loss_sum)).float()])
    flags = s.accelerator.reduce(flags, reduction="sum")  # NCCL: queued on the device, the host goes on
    previous, s.pending_check = s.pending_check, _to_host(flags)
    stop, diverged = _read_check(previous) if previous else (False, False)
    if now or stop or diverged:
        stop, diverged = _read_check(s.pending_check)  # the flags only grow: this answer includes the late one
        s.pending_check = None
    if diverged:
        last_good, _ = checkpoints.latest_checkpoint(s.run_dir, content=False)
        kept = f"the last good checkpoint, {last_good}, is kept" if last_good else "no checkpoint was saved yet"
        raise Diverged(f"the training loss became NaN or infinite at step {s.step} (epoch {s.epoch}); {kept}. "
                       "Start again with a lower optim.lr or with clipping (optim.max_grad_norm)")
    return stop


def _to_host(flags: torch.Tensor) -> tuple:
    """(host tensor, CUDA event after which it holds `flags`): a copy the host does not wait for."""
    if flags.device.type != "cuda":
        return flags, None
    host = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
    host.copy_(flags, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


def _read_check(pending: tuple) -> tuple[bool, bool]:
    host, ready = pending
    if ready is not None:
        ready.synchronize()  # waits for the work up to that step only, not for what was queued since
    stop, diverged = (bool(v) for v in host.tolist())
    return stop, diverged


def save(s: Session) -> Path:
    best_step = s.best["step"] if s.best else None
    with s.phases.measure("save"), s.meter.paused():
        return checkpoints.save_checkpoint(s.accelerator, s.run_dir, progress(s), s.cfg.train.keep_last_checkpoints,
                                             best_step, trainable_only=s.cfg.model.method == "lora")


def log_train(s: Session) -> None:
    """Log the mean loss since the last log and the throughput over that interval, summed over ranks
    (collectives: the only reads of device values outside evaluation)."""
    loss = s.accelerator.reduce(s.loss_sum / max(s.loss_count, 1), reduction="mean")
    s.last_loss = float(loss)
    s.loss_sum.zero_()
    s.loss_count = 0
    samples_per_s, tokens_per_s = s.meter.interval(s.accelerator)
    device = s.accelerator.device
    s.logger.log({
        "step": s.step,
        "epoch": s.epochs_done,
        "train/loss": s.last_loss,
        "train/lr": s.scheduler.get_last_lr()[0],
        "perf/train_samples_per_s": samples_per_s,
        "perf/train_tokens_per_s": tokens_per_s,
        "perf/memory_bytes": telemetry.memory_bytes(device),  # the main process's, now and at its peak
        "perf/peak_memory_bytes": telemetry.peak_memory_bytes(device),
    })


def run_eval(s: Session, split: str, prefix: str):
    """Evaluate `split` (a collective) at threshold 0.5, log the headline metrics under `prefix/`; return
    (all scores, logits, targets)."""
    with s.phases.measure("eval"), s.meter.paused():
        scores, logits, targets = evaluation.evaluate(s.model, s.loaders[split], s.accelerator, s.labels,
                                                      order=s.eval_orders[split])
        log_scores(s, prefix, scores)
    return scores, logits, targets


def log_scores(s: Session, prefix: str, scores: dict) -> None:
    s.logger.log({"step": s.step, "epoch": s.epochs_done, **{f"{prefix}/{k}": scores[k] for k in ("loss", *HEADLINE)}})


def finish(s: Session, built: BuiltModel, data: data_mod.EmotionData) -> dict:
    """Final dev and test evaluation at 0.5, thresholds tuned on dev and the test scores with them
    (`test_tuned`), export, thresholds.json (run directory and model/), summary.json, the end tables, plots/."""
    dev, dev_logits, dev_targets = run_eval(s, "dev", prefix="eval")
    test, test_logits, test_targets = run_eval(s, "test", prefix="test")
    tuned = thresholds.tune(dev_targets, expit(dev_logits), s.labels)
    test_tuned = evaluation.score(test_logits, test_targets, s.labels, thresholds.for_labels(tuned, s.labels))
    log_scores(s, "test_tuned", test_tuned)
    with s.phases.measure("save"):
        model_dir.export_model(s.accelerator, s.model, built.tokenizer, s.run_dir / "model", s.cfg)
    summary = summarize(s, built, data, dev, test, perf_totals(s, built))
    summary.update(test_tuned=test_tuned, thresholds=tuned)
    if s.accelerator.is_main_process:
        for directory in (s.run_dir, s.run_dir / "model"):
            thresholds.save(directory / thresholds.FILE, tuned)
        files.write_json(s.run_dir / "summary.json", summary)
        s.console.final(summary)
        if (unlearned := thresholds.warning(tuned)) is not None:
            s.console.print(f"emodist: warning: {unlearned}")
        if s.cfg.track.plots:
            draw_plots(s, summary)
        s.console.print(f"run directory: {s.run_dir}")
    return summary


def perf_totals(s: Session, built: BuiltModel) -> dict:
    """summary.json's `perf`: throughput over every session of the run, this session's step times, peak
    memory per rank and seconds per phase, MFU."""
    perf = s.meter.totals(s.accelerator)
    perf.update(telemetry.peak_memory(s.accelerator))
    perf.update(telemetry.mfu(perf, built.params_total, built.params_trainable, built.model.config,
                              s.accelerator.num_processes, s.accelerator.device))
    perf["phase_seconds"] = {"load": 0.0, "tokenize": 0.0, **s.phases.seconds, "train": s.meter.elapsed()}
    return perf


def draw_plots(s: Session, summary: dict) -> None:
    """plots/ of the run; a plot that fails costs a warning, not the finished run."""
    from emodist.report import plots

    try:
        plots.run(s.run_dir, summary)
    except Exception as err:  # noqa: BLE001 - summary.json and the model are already written
        s.console.print(f"emodist: warning: plots/ not drawn ({type(err).__name__}: {err}); "
                        "summary.json and metrics.jsonl hold every number")


def summarize(s: Session, built: BuiltModel, data: data_mod.EmotionData, dev: dict, test: dict,
              perf: dict) -> dict:
    cfg, acc = s.cfg, s.accelerator
    return {
        "variant": cfg.variant,
        "base_model": cfg.model.name_or_path,
        "base_model_source": built.source,
        "method": cfg.model.method,
        "quantization": cfg.model.quantization,
        "smoke": cfg.smoke,
        "dataset": data.name,
        "labels": data.labels,
        "num_processes": acc.num_processes,
        "num_nodes": s.topology.num_nodes,
        "distributed_type": s.topology.distributed_type,
        "zero_stage": s.topology.zero_stage,
        "mixed_precision": acc.mixed_precision,
        "params": {"total": built.params_total, "trainable": built.params_trainable},
        "train": {"steps": s.step, "epochs": s.epochs_done,
                  "examples": len(data.splits["train"]), "global_batch_size": cfg.train.global_batch_size,
                  "micro_batch_size": cfg.train.micro_batch_size,
                  "gradient_accumulation_steps": s.plan.accumulation, "final_loss": s.last_loss},
        "splits": {name: {"examples": len(split), "fingerprint": data_mod.split_fingerprint(split)}
                   for name, split in data.splits.items()},
        "dev": dev,
        "test": test,
        "perf": perf,
    }


def banner_rows(cfg: RunConfig, acc: Accelerator, topology: distributed.Topology, built: BuiltModel,
                data: data_mod.EmotionData, plan: Plan, pos_weight: torch.Tensor | None) -> list[tuple[str, str]]:
    m, t = cfg.model, cfg.train
    method = m.method + (f" r={m.lora.r} on {','.join(m.lora.target_modules)}" if m.method == "lora" else "")
    sizes = " / ".join(f"{len(data.splits[s]):,}" for s in data_mod.SPLITS)
    return [
        ("model", f"{m.name_or_path} ({m.architecture})" + (" · tiny random (smoke)" if cfg.smoke else "")),
        ("weights from", built.source),
        ("method", method + {"nf4": " · 4-bit NF4 base", "int8": " · 8-bit LLM.int8 base"}.get(m.quantization, "")),
        ("parameters", f"{built.params_trainable:,} trainable of {built.params_total:,} "
                       f"({100 * built.params_trainable / max(built.params_total, 1):.2f}%)"),
        ("data", f"{data.name}: {len(data.labels)} labels, train/dev/test {sizes}"),
        ("processes", f"{topology.describe()} · {acc.device.type}"),
        ("precision", f"{'DeepSpeed' if topology.deepspeed else 'autocast'} "
                      f"{'fp32' if acc.mixed_precision == 'no' else acc.mixed_precision}, base weights {m.dtype}"),
        ("batch", f"global {t.global_batch_size} = micro {t.micro_batch_size} x {acc.num_processes} processes "
                  f"x {plan.accumulation} accumulation"),
        ("loss", "BCE" + (f", positives weighted {float(pos_weight.min()):.3g}-{float(pos_weight.max()):.3g} "
                          f"(balanced, cap {t.pos_weight_cap:g})" if pos_weight is not None else "")),
        ("schedule", f"{plan.total_steps} steps ({plan.steps_per_epoch}/epoch), warmup {plan.warmup_steps}, "
                     f"{cfg.optim.schedule}, lr {cfg.optim.lr:g}"
                     + (f", head lr {cfg.optim.head_lr:g}" if cfg.optim.head_lr else "")),
        ("evaluation", f"dev every {plan.eval_every} steps and at the end" if plan.eval_every else "dev at the end"),
    ]


def positive_weights(cfg: RunConfig, data: data_mod.EmotionData, device: torch.device) -> torch.Tensor | None:
    """train.pos_weight=balanced: each label's negatives / positives in the train split, capped at
    train.pos_weight_cap (and at least 1), so that a rare label's few positives weigh as much as its many
    negatives; None (plain BCE) otherwise."""
    if cfg.train.pos_weight == "none":
        return None
    targets = data.splits["train"].targets
    positives = targets.sum(axis=0)
    ratio = (len(targets) - positives) / np.maximum(positives, 1)
    return torch.tensor(np.clip(ratio, 1.0, cfg.train.pos_weight_cap), dtype=torch.float32, device=device)


def build_optimizer(model: torch.nn.Module, optim: OptimConfig, head_modules: list[str], fused: bool = True):
    """The configured AdamW over the trainable parameters, in up to four groups: body/head x decay/no decay.

    `fused`: torch's AdamW updates all parameters in one kernel per group (CPU and GPU) instead of a loop
    of small ones; off under DeepSpeed, which steps the optimizer over its own flat partitions.

    The body groups come first, so `get_last_lr()[0]` is the body's rate. Biases and norm weights
    (1-D tensors) get no weight decay. Under DeepSpeed optimizer offload, accelerate turns this AdamW
    into DeepSpeedCPUAdam (adamw_mode) over the same groups.
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((is_head_parameter(name, head_modules), param.ndim < 2), []).append(param)
    head_lr = optim.head_lr or optim.lr
    param_groups = [
        {"params": groups[key], "lr": head_lr if key[0] else optim.lr,
         "weight_decay": 0.0 if key[1] else optim.weight_decay}
        for key in sorted(groups)
    ]
    if optim.name == "adamw":
        return torch.optim.AdamW(param_groups, lr=optim.lr, fused=fused or None)
    return _optimizer_class(optim.name)(param_groups, lr=optim.lr)


def _optimizer_class(name: str):
    """bitsandbytes' optimizer called `name`."""
    import bitsandbytes as bnb  # imported only when asked for: it is slow to import

    return {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw": bnb.optim.PagedAdamW,
            "paged_adamw_8bit": bnb.optim.PagedAdamW8bit}[name]


def build_scheduler(optimizer, optim: OptimConfig, plan: Plan, num_processes: int):
    """Warmup then the configured decay, in scheduler ticks.

    accelerate's prepared scheduler ticks `num_processes` times per optimizer step (it assumes lengths
    counted on the unsharded data), under DeepSpeed too (it hands DeepSpeed only DeepSpeed's own
    schedulers), so the schedule is laid out in those ticks.

    The curves are transformers' `get_scheduler` linear / cosine / constant_with_warmup (tests compare
    them), written here because importing `transformers.optimization` imports the Trainer's utilities and
    with them peft and bitsandbytes: 300 MiB of resident memory a full fine-tune never uses.
    """
    factor = functools.partial(lr_factor, optim.schedule, plan.warmup_steps * num_processes,
                               plan.total_steps * num_processes)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_factor(schedule: str, warmup: int, total: int, tick: int) -> float:
    """The multiplier of the peak learning rate at scheduler tick `tick`: linear warmup over `warmup`
    ticks, then `schedule` (linear to 0 at `total`, half a cosine to 0 at `total`, or constant)."""
    if tick < warmup:
        return tick / max(1, warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, (total - tick) / max(1, total - warmup))
    progress = (tick - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
