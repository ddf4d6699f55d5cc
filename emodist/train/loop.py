"""The training loop: micro-batches, optimizer steps, and what happens after each step (the stop and
divergence check, logging, evaluation, saving).
"""

from __future__ import annotations

import math
import shlex

import torch

from emodist.report import telemetry
from emodist.rundir import checkpoints
from emodist.runtime.errors import Diverged, Preempted
from emodist.train.evaluation import run_eval
from emodist.train.saving import save
from emodist.train.state import Session


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
        loss = s.loss_fn(logits.float(), targets)
        s.accelerator.backward(loss)
        if s.accelerator.sync_gradients and s.cfg.optim.max_grad_norm > 0:
            s.accelerator.clip_grad_norm_(s.model.parameters(), s.cfg.optim.max_grad_norm)
        s.optimizer.step()
        s.scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
    s.loss_sum += loss.detach()
    s.loss_count += 1
    s.meter.count(batch, samples=len(targets))


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
        if not math.isfinite(scores["loss"]):  # the weights themselves: a checkpoint of them would be kept as best
            raise diverged_at(s, "dev loss")
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
        raise diverged_at(s, "training loss")
    return stop


def diverged_at(s: Session, what: str) -> Diverged:
    """The Diverged error of `what` (a loss) turning NaN or infinite at this step. The checkpoints saved
    before are kept, but none is called good: the newest holds the weights whose loss it was."""
    newest, _ = checkpoints.latest_checkpoint(s.run_dir, content=False)
    kept = (f"the checkpoints saved before it are kept (the newest, {newest}, may already hold the diverging "
            "weights)" if newest else "no checkpoint was saved yet")
    return Diverged(f"the {what} became NaN or infinite at step {s.step} (epoch {s.epoch}); {kept}. Start again "
                    "with a lower optim.lr or with clipping (optim.max_grad_norm)")


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
