"""A run's life: setup -> fit -> finish, with the tracker closed whatever happens.

    summary = train(cfg, accelerator, built, data, tokenized, run, console)
"""

from __future__ import annotations

import contextlib

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from emodist import data as data_mod
from emodist.config import RunConfig
from emodist.data import sampling
from emodist.models import BuiltModel
from emodist.report import telemetry, tracking
from emodist.report.console import Console
from emodist.rundir import contract
from emodist.runtime import hostmem
from emodist.runtime.signals import StopSignals
from emodist.train import distributed
from emodist.train.finish import finish
from emodist.train.loop import fit
from emodist.train.optim import build_optimizer, build_scheduler, positive_weights
from emodist.train.plan import Plan
from emodist.train.saving import keep_trainable_only, restore
from emodist.train.state import Session


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
            keep_trainable_only(accelerator, model)
    pos_weight = positive_weights(cfg, data, accelerator.device)
    console.banner(f"emodist · {cfg.variant}{' (smoke)' if cfg.smoke else ''}", banner_rows(
        cfg, accelerator, topology, built, data, plan, pos_weight))
    main = accelerator.is_main_process
    s = Session(cfg=cfg, accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
                loaders=loaders, labels=data.labels, plan=plan, topology=topology, run=run, console=console,
                phases=phases, pos_weight=pos_weight, stop=stop, batches=batches, eval_orders=eval_orders)
    if run.checkpoint is not None:
        restore(s, run.checkpoint)
    # metrics.jsonl and wandb start once a resume has loaded: nothing of the run changes before that
    tracker = tracking.start_wandb(cfg, run_dir, data.labels, topology, console) if main else None
    s.logger = tracking.MetricLogger(run_dir / "metrics.jsonl", console, enabled=main, tracker=tracker)
    return s


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
