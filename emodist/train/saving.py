"""The checkpoint policy of a run: what a checkpoint records of the loop, when it is saved, and how a
resume takes the loop back to it.
"""

from __future__ import annotations

from pathlib import Path

from emodist.rundir import checkpoints, fingerprint
from emodist.runtime.errors import (
    UsageError,
)
from emodist.train.state import Session


def restore(s: Session, checkpoint: Path) -> None:
    """Continue from `checkpoint`: weights, optimizer, scheduler and RNG (accelerate), and the progress."""
    state = checkpoints.load_checkpoint(s.accelerator, checkpoint, trainable_only=s.cfg.model.method == "lora")
    finishing = (state["step"] == s.plan.total_steps == state.get("total_steps")  # the last step of this same plan
                 and s.run.may_only_finish)  # its own run, killed while it finished
    if state["step"] >= s.plan.total_steps and not finishing:  # before the run directory changes: nothing to do
        t = s.cfg.train
        raise UsageError(f"--resume {checkpoint}: nothing left to train: it is at step {state['step']} and this run "
                         f"ends at step {s.plan.total_steps} (train.epochs={t.epochs}, train.max_steps={t.max_steps}): "
                         "raise train.max_steps or train.epochs to train further (nothing was changed)")
    s.step, s.epoch, s.batches_in_epoch, s.best = state["step"], state["epoch"], state["batches_in_epoch"], state["best"]
    rank = s.accelerator.process_index
    s.loss_sum.fill_(state["loss_sum_per_rank"][rank])
    s.loss_count = state["loss_count"]
    last_loss = state.get("last_loss")  # checkpoints from before it was recorded: NaN
    s.last_loss = float(last_loss) if isinstance(last_loss, (int, float)) else float("nan")
    s.meter.carry_over(state.get("perf"))
    s.precisions = list(state.get("precisions") or [])  # a checkpoint from before they were recorded: unknown
    if s.precisions and s.precisions[-1] != s.accelerator.mixed_precision:  # `auto` on another GPU, or an override
        then, now = (_shown(p) for p in (s.precisions[-1], s.accelerator.mixed_precision))
        s.console.print(f"emodist: warning: {checkpoint} trained in {then}, this session trains in {now}: the run's "
                        f"steps mix precisions (summary.json says {trained_in(s)}); set train.mixed_precision="
                        f"{s.precisions[-1]} to keep one")
    aside = s.run.restored(s.cfg, s.step, finishing) if s.accelerator.is_main_process else None
    s.accelerator.wait_for_everyone()
    s.console.print(f"resumed from {checkpoint} at step {s.step} (epoch {s.epoch}, batch {s.batches_in_epoch})"
                    + (": the run's last step, so it only finishes (evaluation, thresholds, model)" if finishing else ""))
    if aside is not None:
        s.console.print(f"emodist: the checkpoints after step {s.step} ({', '.join(sorted(p.name for p in aside.iterdir()))}"
                        f") belong to steps this run leaves behind: moved to {aside}, which nothing reads (to go back "
                        "to them, stop this run and move them back into checkpoints/); delete it when you no longer "
                        "need them")


def trained_in(s: Session) -> str:
    """The mixed precision of every session so far, in order, joined by '+' (one session: accelerate's name)."""
    seen = [*s.precisions, s.accelerator.mixed_precision]
    return "+".join(p for i, p in enumerate(seen) if i == 0 or p != seen[i - 1])


def _shown(precision: str) -> str:
    return "fp32" if precision == "no" else precision


def progress(s: Session) -> dict:
    """What state.json records of a checkpoint taken now (a collective: every rank's loss sum)."""
    loss_sums = s.accelerator.gather(s.loss_sum.detach().float().reshape(1)).tolist()
    train_size = len(s.loaders["train"].dataset)
    seen_this_epoch = s.batches_in_epoch * s.cfg.train.micro_batch_size * s.accelerator.num_processes
    return {
        "step": s.step, "epoch": s.epoch, "batches_in_epoch": s.batches_in_epoch,
        "examples_seen": s.epoch * train_size + min(seen_this_epoch, train_size),
        "best": s.best, "loss_sum_per_rank": loss_sums, "loss_count": s.loss_count, "last_loss": s.last_loss,
        "total_steps": s.plan.total_steps,
        **s.topology.identity(),
        "fingerprint": (fp := fingerprint.fingerprint(s.cfg, s.labels, s.data_identity)),
        "config_hash": fingerprint.fingerprint_hash(fp),
        "stopped_by": s.stop.received,
        "precisions": trained_in(s).split("+"),
        "perf": s.meter.carried(s.accelerator),  # the next session adds its own to these
    }


def check_in_place(s: Session) -> None:
    """Every rank, before anything is saved: UsageError when the run directory is no longer this launch's
    (`RunLock.lost`); nothing more is written at its path, where another run may have started."""
    from accelerate.utils import broadcast_object_list

    why = [s.run.lock.lost() if s.accelerator.is_main_process and s.run.lock is not None else None]
    broadcast_object_list(why)
    if why[0]:
        raise UsageError(f"{s.run_dir}: {why[0]} while this run trained: it stops at step {s.step} and writes nothing "
                         "more there (the steps since its last checkpoint are lost): continue it where its directory "
                         "is now, with --output-dir naming it and --resume auto")


def save(s: Session) -> Path:
    check_in_place(s)
    best_step = s.best["step"] if s.best else None
    with s.phases.measure("save"), s.meter.paused():
        return checkpoints.save_checkpoint(s.accelerator, s.run_dir, progress(s), s.cfg.train.keep_last_checkpoints,
                                           best_step, trainable_only=s.cfg.model.method == "lora")


def keep_trainable_only(accelerator, model) -> None:
    """Make `accelerator.save_state` write only the trainable weights of `model` and `load_state` load them
    back (outside DeepSpeed, which is told the same with exclude_frozen_parameters). Frozen weights and
    buffers (4-bit quantization state included) come from the base model on resume."""
    model = accelerator.unwrap_model(model)  # the names save_state and load_state use, DDP or not
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}

    def before_save(models, weights, output_dir):
        for i, state_dict in enumerate(weights):
            weights[i] = {k: v for k, v in state_dict.items() if k in trainable}

    def before_load(models, input_dir):
        from safetensors.torch import load_file

        saved = load_file(str(Path(input_dir) / "model.safetensors"))  # load_state_dict copies to the device
        missing, unexpected = model.load_state_dict(saved, strict=False)
        missing = [k for k in missing if k in trainable]
        if unexpected or missing:
            raise UsageError(f"--resume {input_dir}: its weights do not fit this model (unexpected "
                             f"{unexpected[:3]}, missing {missing[:3]}): resume with the settings it was saved with")
        models.clear()  # loaded: accelerate goes on with the optimizer, scheduler and RNG states

    if accelerator.state.deepspeed_plugin is None:
        accelerator.register_save_state_pre_hook(before_save)
        accelerator.register_load_state_pre_hook(before_load)
