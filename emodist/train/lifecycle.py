"""A training run's life: setup -> fit -> finish -> close, with close run whatever happens.

    with StopSignals(training=False) as stop:       # the entry script, before torch loads
        with Lifecycle(cfg, stop) as life:           # close() on the way out: normal end, refusal or error
            if life.setup(overwrite=False, resume="auto"):   # False: the run had already finished
                life.fit()
                life.finish()

`setup` opens what the run holds, each as it comes: the Accelerator (and the process group), the data, the
run directory (and its lock), the model and its tokens, the loop's state (`Session`) and the tracker.
`close` lets go of all of it, in this order and each whatever the others did: the tracker (wandb learns
the run's exit code; metrics.jsonl is closed), the signal handlers (a launcher's SIGTERM then ends a rank
that is only reporting an error), the run directory's lock, the model and the process group. A start refused
or stopped before it trained removes the run directory it made (`abandon`): a directory that was there stays.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from emodist import data as data_mod
from emodist import models
from emodist.config import RunConfig
from emodist.data import sampling
from emodist.models import BuiltModel, memory
from emodist.models.placement import Target
from emodist.models.shapes import model_shapes
from emodist.report import telemetry, tracking, wandb_access
from emodist.report.console import Console
from emodist.rundir import checkpoints, contract, fingerprint
from emodist.rundir.lock import LOCK
from emodist.runtime import hostmem, process
from emodist.runtime.errors import NO_SPACE_ERRNOS, NoSpace, UsageError, format_bytes
from emodist.runtime.signals import StopSignals
from emodist.train import distributed, loop, losses
from emodist.train.accelerator import check_data_fits, make_accelerator
from emodist.train.finish import finish
from emodist.train.optim import build_optimizer, build_scheduler, positive_weights
from emodist.train.plan import Plan
from emodist.train.saving import keep_trainable_only, restore
from emodist.train.state import Session


class Lifecycle:
    """One launch of a training run (see the module's docstring). Raises, from `fit`, Preempted on a stop
    signal, Diverged on a NaN loss, NoSpace when the disk fills; `close` still runs."""

    def __init__(self, cfg: RunConfig, stop: StopSignals) -> None:
        self.cfg = cfg
        self.stop = stop
        """The signal handlers the entry script installed before loading: a scheduler's signal while the model
        loads stops the run after its first step (emodist/runtime/signals.py)."""
        self.phases = telemetry.Phases()
        self.accelerator: Accelerator | None = None
        self.run: contract.Run | None = None
        self.data: data_mod.EmotionData | None = None
        self.built: BuiltModel | None = None
        self.session: Session | None = None
        self.summary: dict | None = None

    @property
    def run_dir(self) -> Path | None:
        """The run directory once it is open."""
        return self.run.path if self.run is not None else None

    def __enter__(self) -> Lifecycle:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc)
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS and self.run_dir is not None:
            raise run_out_of_space(self.run_dir, exc) from None  # metrics.jsonl, summary.json: not a checkpoint's

    def setup(self, overwrite: bool = False, resume: str = "none") -> bool:
        """Open the accelerator, the data, the run directory, the model and its tokens, then the loop state.
        False (and nothing built) when the run directory holds a run that has already finished."""
        cfg = self.cfg
        process.quiet_libraries()
        telemetry.peak_override()  # read at the end of the run: a typo there is refused now
        wandb_access.resolve_mode(cfg.track.wandb)  # read once the model is loaded: a bad WANDB_MODE is refused now
        with self.phases.measure("load"):
            accelerator = self.accelerator = make_accelerator(cfg)
            topology = distributed.Topology.of(accelerator)
            process.for_training(accelerator.device.type, cfg.train.seed, cfg.train.cpu_threads)
            console = Console(accelerator.is_main_process)
            dataset = self.data = data_mod.load(cfg.data, seed=cfg.train.seed)
            check_data_fits(cfg, dataset, accelerator)
            planned = plan_memory(cfg, accelerator, topology, len(dataset.labels))  # before the run dir and weights
            if not cfg.smoke and not Path(cfg.model.name_or_path).is_absolute() and Path(cfg.model.name_or_path).is_dir():
                # config.yaml names it wherever it is read from: relative, `bases/x` read as a hub id elsewhere
                cfg.model.name_or_path = os.path.abspath(cfg.model.name_or_path)
            identity = data_mod.identity(dataset.splits)  # hashed once: the resume check and every checkpoint
            if cfg.model.method == "lora" and not cfg.smoke and (base := models.base_identity(models.base_path(cfg.model))):
                identity[fingerprint.BASE_KEY] = base  # its checkpoints hold the adapters only
            run = self.run = contract.open_run(cfg, accelerator, dataset.labels, topology.identity(), overwrite, resume,
                                               notify=console.print, data=identity)
            if run.finished:
                console.print(f"emodist: {run.path} has already finished (summary.json): nothing to do. Train it "
                              "further with more train.epochs or train.max_steps, or start again with --overwrite")
                return False
            built = self.built = build(cfg, accelerator, topology, dataset, run)
        with self.phases.measure("tokenize"):
            tokenized = data_mod.tokenize(dataset, built.tokenizer, cfg.data.max_length, cfg.data.cache_dir,
                                          accelerator)
        self.session = make_session(cfg, accelerator, topology, built, dataset, tokenized, run, console,
                                    self.stop, self.phases, planned, identity)
        return True

    def fit(self) -> None:
        """Train to the plan's last step (from `run.checkpoint` when there is one)."""
        self.stop.training = True
        device = self.accelerator.device
        rebuilt = self.session.topology.shards_parameters or self.session.cfg.model.quantization != "none"
        process.for_steps(device.type, rebuilds_weights=rebuilt)  # gathered or dequantized in every step
        self.session.peak_before_steps = telemetry.reset_peak_memory(device)  # the plan predicts the steps' peak
        loop.fit(self.session)
        self.session.training_peak = telemetry.peak_memory_bytes(device)

    def finish(self) -> dict:
        """Evaluate on dev and test, export `model/`, write `summary.json` and `plots/`; return the summary."""
        self.stop.finishing = True
        if self.stop.received is not None and self.session is not None:  # it came as the last step ended or saved
            self.session.console.print(f"emodist: the {self.stop.received} came once training had reached its last "
                                       "step: finishing its evaluation and export first (a Ctrl-C stops now, and "
                                       "--resume auto finishes later)")
        hostmem.release()  # the training steps' freed pages: evaluation and export start from what is live
        self.summary = finish(self.session, self.built, self.data)
        return self.summary

    def close(self, error: BaseException | None = None) -> None:
        """Let go of everything the run holds (the module's docstring says in which order); `error`: what ended
        the run, if anything (wandb records its exit code). Safe to call twice."""
        # refused, interrupted (Ctrl-C while loading) or out of space (the tokenized cache) before training
        refused_at_start = self.session is None and isinstance(error, (UsageError, KeyboardInterrupt, NoSpace))
        try:
            logger = self.session.logger if self.session is not None else None
            self.session = None  # the model and optimizer it holds go with the accelerator's below
            if logger is not None:
                run_dir = self.run.path
                files = [run_dir / "summary.json", run_dir / "metrics.jsonl", *sorted(run_dir.glob("plots/*.png"))]
                logger.close(self.summary, files, tracking.exit_code_of(error))
        finally:
            self.stop.restore()
            try:
                if self.run is not None:
                    if refused_at_start:
                        abandon(self.run)
                    self.run.close()
            finally:
                accelerator, self.accelerator = self.accelerator, None
                if accelerator is not None:
                    distributed.shut_down(accelerator)


def run_out_of_space(run_dir: Path, err: OSError) -> NoSpace:
    """The one line for a full disk under the run's own files (a checkpoint's save says its own): where, what
    is kept, and how to go on (a plain start again was refused: the directory holds a run)."""
    last, _ = checkpoints.latest_checkpoint(run_dir, content=False)
    kept = f"{last.name}, the last complete checkpoint, is kept" if last else "no checkpoint was complete yet"
    writing = f" while writing {Path(err.filename).name}" if err.filename else ""
    return NoSpace(f"no space left on the disk of {run_dir}{writing}: {kept}: free some space, then continue the run "
                   "with the same command and --resume auto")


def abandon(run: contract.Run) -> None:
    """A start refused before it trained (a model that is not cached, a setting found wrong once the model is
    known): remove the run directory this launch made, when it holds nothing but the start's own files, so that
    each refused try leaves no unfinished run behind. A directory that was there before is left as it is. Only
    the lock's holder (the main process) removes anything, and only while it holds the lock."""
    if run.lock is None or not run.lock.made_dir:
        return
    with contextlib.suppress(OSError):  # a directory gone or unwritable: the refusal is what is reported
        names = {p.name for p in run.path.iterdir()} - {LOCK}
        if not names <= set(contract.START_FILES):
            return
        for name in names:
            target = run.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        run.close()
        run.path.rmdir()  # fails, leaving it, if something appeared there meanwhile


def build(cfg: RunConfig, accelerator: Accelerator, topology: distributed.Topology, dataset: data_mod.EmotionData,
          run: contract.Run) -> BuiltModel:
    """The model of `cfg` from its base (a smoke base is made first, once per machine, by its main process)."""
    source = models.base_path(cfg.model)
    if cfg.smoke:
        with accelerator.main_process_first():
            texts = dataset.splits["train"].texts
            source = str(models.make_smoke_base(cfg.model.architecture, texts,
                                                models.smoke_base_dir(cfg, run.path, texts),
                                                seed=cfg.train.seed, size=cfg.model.smoke_size))
    built = models.build_model(cfg.model, dataset.labels, source, accelerator.device,
                               deepspeed_stage=topology.zero_stage,
                               quant_storage=distributed.quant_storage_dtype(cfg, topology))
    check_max_length(cfg, built.model.config)  # checked before the run directory opened where the shapes were known
    return built


def check_max_length(cfg: RunConfig, config) -> None:
    """UsageError when `data.max_length` is longer than the position table of the model's transformers `config`
    (BERT, DistilBERT; decoders rotate their positions): else the first long batch fails in the embeddings."""
    longest = models.readable_tokens(config)
    if config.model_type in ABSOLUTE_POSITIONS and longest and cfg.data.max_length > longest:
        raise UsageError(f"data.max_length={cfg.data.max_length}: the model reads at most {longest} tokens (its "
                         f"max_position_embeddings): set data.max_length={longest} or less")


ABSOLUTE_POSITIONS = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert")
"""Encoders whose position table bounds the tokens per text (decoders rotate their positions)."""


def plan_memory(cfg: RunConfig, accelerator: Accelerator, topology: distributed.Topology,
                num_labels: int) -> memory.MemoryPlan | None:
    """The run's memory plan (None when the model's shapes are not known here: a hub model that is none of the
    variants' bases; None under FSDP, which the plan does not model). UsageError when `data.max_length` is
    longer than the model reads and, on a GPU, when the plan needs more than the GPU has (train.check_memory)."""
    if topology.distributed_type == "FSDP":  # planned as DDP, its sharded weights would count whole: no refusal on that
        return None
    device = accelerator.device
    placement = topology.placement(device.type, accelerator.mixed_precision)
    try:
        shapes = model_shapes(cfg, num_labels, models.base_path(cfg.model))
    except UsageError:
        return None
    check_max_length(cfg, shapes.config)
    planned = memory.plan(cfg, placement, num_labels, shapes)
    if device.type == "cuda" and cfg.train.check_memory:
        gpu = Target("cuda", torch.cuda.get_device_properties(device).total_memory, torch.cuda.get_device_name(device))
        memory.check_fits(cfg, planned, gpu, num_labels)
    return planned


def make_session(cfg: RunConfig, accelerator: Accelerator, topology: distributed.Topology, built: BuiltModel,
                 data: data_mod.EmotionData, tokenized: dict, run: contract.Run, console: Console, stop: StopSignals,
                 phases: telemetry.Phases, memory_plan: memory.MemoryPlan | None = None,
                 data_identity: dict[str, str] | None = None) -> Session:
    """The loop's state: loaders, optimizer and schedule prepared by accelerate, a checkpoint restored, the
    start banner shown, then the tracker started."""
    run_dir = run.path
    multiple = cfg.data.pad_to_multiple_of or (8 if accelerator.device.type == "cuda" else 1)
    collate = data_mod.collator(built.tokenizer, multiple)
    train_collate = collate
    if cfg.data.packing:  # before accelerate wraps the model: the packed forward runs inside every wrapper
        models.accept_packed(built.model)
        train_collate = data_mod.PackedCollator(built.tokenizer.pad_token_id, models.POOL[cfg.model.architecture],
                                                cfg.data.pad_to_multiple_of or data_mod.PACKED_MULTIPLE)
    batches = sampling.LengthGroupedBatches(data_mod.lengths(tokenized["train"]), cfg.train.micro_batch_size,
                                            accelerator.num_processes, accelerator.gradient_accumulation_steps,
                                            seed=cfg.train.seed, group=cfg.data.group_by_length)
    pin = accelerator.device.type == "cuda"
    loaders = {"train": DataLoader(tokenized["train"], batch_sampler=batches, collate_fn=train_collate, pin_memory=pin)}
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
        optimizer = build_optimizer(built.model, cfg.optim, cfg.model.head_modules,
                                    fused=accelerator.state.deepspeed_plugin is None,
                                    paged=accelerator.device.type == "cuda")
        scheduler = build_scheduler(optimizer, cfg.optim, plan, accelerator.num_processes)
        if cfg.train.compile:  # in place, before DDP wraps the model: the first steps compile
            models.compile_blocks(built.model)
        model, optimizer, scheduler = accelerator.prepare(built.model, optimizer, scheduler)
        if cfg.model.method == "lora":
            keep_trainable_only(accelerator, model)
    pos_weight = positive_weights(cfg, data, accelerator.device)
    shared = data_mod.shared_with_train(data.splits)
    console.banner(f"emodist · {cfg.variant}{' (smoke)' if cfg.smoke else ''}", banner_rows(
        cfg, accelerator, topology, built, data, plan, pos_weight, memory_plan, shared))
    threads = process.oversubscribed(cfg.train.cpu_threads) if accelerator.device.type == "cpu" else None
    for warning in (*built.notes, data_mod.shared_warning(data.splits, shared), *data_mod.label_warnings(data), threads,
                    distributed.dropped_processes(accelerator.num_processes)):
        if warning:
            console.print(f"emodist: warning: {warning}")
    main = accelerator.is_main_process
    s = Session(cfg=cfg, accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                loaders=loaders, labels=data.labels, plan=plan, topology=topology, run=run, console=console,
                phases=phases, loss_fn=losses.build(cfg.train, pos_weight), stop=stop, batches=batches, eval_orders=eval_orders,
                memory_plan=memory_plan, data_identity=data_identity or {})
    if run.checkpoint is not None:
        restore(s, run.checkpoint)
    # metrics.jsonl and wandb start once a resume has loaded: nothing of the run changes before that
    tracker = tracking.start_wandb(cfg, run_dir, data.labels, topology, console) if main else None
    s.logger = tracking.MetricLogger(run_dir / "metrics.jsonl", console, enabled=main, tracker=tracker)
    return s


def banner_rows(cfg: RunConfig, acc: Accelerator, topology: distributed.Topology, built: BuiltModel,
                data: data_mod.EmotionData, plan: Plan, pos_weight: torch.Tensor | None,
                memory_plan: memory.MemoryPlan | None = None,
                shared: dict[str, int] | None = None) -> list[tuple[str, str]]:
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
        *([("also in train", f"{shared['dev']:,} dev and {shared['test']:,} test texts, word for word")]
          if any((shared or {}).values()) else []),
        ("processes", f"{topology.describe()} · {acc.device.type}"),
        ("precision", f"{'DeepSpeed' if topology.deepspeed else 'autocast'} "
                      f"{'fp32' if acc.mixed_precision == 'no' else acc.mixed_precision}, base weights {m.dtype}"
                      + (", blocks compiled (train.compile)" if t.compile else "")),
        ("batch", f"global {t.global_batch_size} = micro {t.micro_batch_size} x {acc.num_processes} processes "
                  f"x {plan.accumulation} accumulation"
                  + (", grouped by length" if cfg.data.group_by_length else ", random")
                  + (", packed (no padding)" if cfg.data.packing else "")),
        ("loss", losses.describe(t) + (f", positives weighted {float(pos_weight.min()):.3g}-{float(pos_weight.max()):.3g} "
                          f"(balanced, cap {t.pos_weight_cap:g})" if pos_weight is not None else "")),
        ("schedule", f"{plan.total_steps} steps ({plan.steps_per_epoch}/epoch), warmup {plan.warmup_steps}, "
                     f"{cfg.optim.schedule}, lr {cfg.optim.lr:g}"
                     + (f", head lr {cfg.optim.head_lr:g}" if cfg.optim.head_lr else "")),
        ("evaluation", f"dev every {plan.eval_every} steps and at the end" if plan.eval_every else "dev at the end"),
        ("memory plan", f"{format_bytes(memory_plan.peak_bytes)} per process at the peak (launch/plan.py)"
                        if memory_plan else "none: FSDP is not planned" if topology.distributed_type == "FSDP"
                        else "none: the model's shapes are not known here"),
    ]
