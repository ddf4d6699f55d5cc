"""The run directory: what a start, a resume or an overwrite may do with the files already there.

    run = contract.open_run(cfg, accelerator, labels, topology, overwrite=False, resume="auto")
    run.path, run.checkpoint, run.finished    # where; the checkpoint to go on from (None: step 0); nothing to do
    run.restored(cfg, step)                   # main process, once that checkpoint has loaded
    run.close()                               # releases the lock

A user who trains for hours never loses a run to a mistyped command:

- Only emodist's own run directories are written into. A directory holding anything else (a `model/` or
  `config.yaml` emodist did not write) is refused by every mode, `--overwrite` included; emodist marks
  the directories it makes with `MARKER`.
- A plain start refuses a directory that holds a run; `--overwrite` moves that run aside, whole, to
  `<dir>.replaced-<time>` (its wandb run with it: the new run is a new wandb run), and says where.
- `--resume auto` goes on from the newest checkpoint that matches its hashes (one that does not is skipped,
  in one line). With none, it starts again only what holds nothing of value: a start stopped before its
  first checkpoint, from step 0, or a fork, from the checkpoint its marker records. A finished run with the
  same length is left as it is.
- `--resume PATH` into another directory starts a new run there from that checkpoint (a fork); the target
  must be new, empty, or that fork stopped before its first checkpoint (or moved aside by `--overwrite`). A
  checkpoint at the run's last step has nothing left to train and is refused (`training.restore`), but in its
  own run without summary.json (killed while finishing): the run then only finishes.
- Nothing of a run is changed before the checkpoint it resumes from has loaded (`Run.restored`).
- One launch at a time: the main process holds the directory's lock (`emodist.rundir.lock`) for the whole run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from emodist import config as config_mod
from emodist.config import RunConfig
from emodist.rundir import checkpoints, fingerprint, timeline
from emodist.rundir.lock import LOCK, RunLock
from emodist.runtime.errors import UsageError
from emodist.runtime.files import free_name

MARKER = ".emodist-run"
"""Written into every run directory emodist makes: its files are emodist's own."""
TRAINED = ("metrics.jsonl", "summary.json", "checkpoints", "model", "thresholds.json", "plots", "export")
"""What a run that started training leaves: a directory holding any of them is never silently replaced."""
START_FILES = ("config.yaml", "smoke-base", MARKER)
"""What every start writes again (a start that failed before training leaves only these)."""
EXPENDABLE = ("metrics.jsonl", "wandb")
"""What a run stopped before its first checkpoint leaves: a start over with the same settings replaces it."""
LENGTH_KEYS = ("train.epochs", "train.max_steps")  # a finished run resumed with other values trains on


@dataclass
class Run:
    """An opened run directory (see `open_run`)."""

    path: Path
    checkpoint: Path | None = None
    """The checkpoint to resume from; None: train from step 0."""
    finished: bool = False
    """The run had already finished with these settings: there is nothing to do."""
    fork_of: Path | None = None
    """The run directory of `checkpoint`, when it is another one (its history is copied at `restored`)."""
    may_only_finish: bool = False
    """A checkpoint at the plan's last step only finishes this run (`training.restore`): its own, killed while it
    finished (no summary.json)."""
    lock: RunLock | None = field(default=None, repr=False)

    def restored(self, cfg: RunConfig, step: int, finishing: bool = False) -> Path | None:
        """Main process, once `checkpoint` has loaded: move the checkpoints after `step` aside (returns where),
        drop the records logged after it (`finishing`: also the final evaluation's of `step`), keep a finished
        run's summary as `summary.step-N.json` (never over an earlier one), and write this launch's config."""
        aside = timeline.set_aside_after(self.path / "checkpoints", step)
        metrics = self.path / "metrics.jsonl"
        if self.fork_of is not None and (self.fork_of / "metrics.jsonl").is_file():
            shutil.copy2(self.fork_of / "metrics.jsonl", metrics)
        timeline.truncate_metrics(metrics, after_step=step, training_only_at_step=finishing)
        summary = self.path / "summary.json"
        if summary.exists():
            os.replace(summary, _unused(self.path / f"summary.step-{_finished_step(summary)}.json"))
        config_mod.dump(cfg, self.path / "config.yaml")
        return aside

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _unused(path: Path) -> Path:
    """`path` if nothing is there, else the first free `NAME.2.json`, `NAME.3.json`, ...: a run rewound twice
    to before one step keeps both summaries it replaced."""
    return free_name(path, lambda number: path.with_name(f"{path.stem}.{number}{path.suffix}"))


def open_run(cfg: RunConfig, accelerator, labels: list[str], topology: dict, overwrite: bool = False,
             resume: str = "none", notify=print, data: dict[str, str] | None = None) -> Run:
    """Decide what this launch does with its run directory (on the main process, holding the lock) and tell
    every rank (a collective). Sets `cfg.output_dir`. Raises UsageError, on every rank, with nothing changed,
    when the directory cannot be used this way.

    `resume`: `none`, `auto` or the path of a checkpoints/step-N directory; `topology`: what a checkpoint
    must match (num_processes, distributed_type, zero_stage); `notify`: prints the main process's notices;
    `data`: the splits' identity (`emodist.data.identity`), which a checkpoint must match too.
    """
    from accelerate.utils import broadcast_object_list

    run, problem, failure = None, None, None
    if accelerator.is_main_process:
        try:
            run = _open(cfg, labels, topology, overwrite, resume, notify, data)
        except UsageError as err:
            problem = str(err)
        except Exception as err:  # noqa: BLE001 - re-raised below, once the other ranks know to stop
            failure, problem = err, f"the main process could not open the run directory ({type(err).__name__}: {err})"
    decided = [problem, run and (str(run.path), str(run.checkpoint) if run.checkpoint else None, run.finished,
                                 str(run.fork_of) if run.fork_of else None, run.may_only_finish)]
    broadcast_object_list(decided)
    if failure is not None:
        raise failure
    if decided[0]:
        raise UsageError(decided[0])
    if run is None:
        path, checkpoint, finished, fork_of, may_only_finish = decided[1]
        run = Run(Path(path), Path(checkpoint) if checkpoint else None, finished, Path(fork_of) if fork_of else None,
                  may_only_finish)
    cfg.output_dir = str(run.path)
    accelerator.wait_for_everyone()
    return run


def _open(cfg: RunConfig, labels: list[str], topology: dict, overwrite: bool, resume: str, notify,
          data: dict[str, str] | None = None) -> Run:
    current = fingerprint.fingerprint(cfg, labels, data)
    named = Path(resume) if resume not in ("none", "auto") else None
    if resume == "auto" and not cfg.output_dir:
        raise UsageError("--resume auto continues the run in --output-dir, and none was given: add --output-dir "
                         "runs/<the run> (or drop --resume to start a new run)")
    if named is not None and (named.parent.name != "checkpoints" or not re.fullmatch(r"step-\d+", named.name)):
        raise UsageError(f"--resume {named}: not a checkpoint directory (expected <run>/checkpoints/step-N): name "
                         "one, or pass --resume auto with --output-dir")
    if overwrite and resume == "auto":
        raise UsageError("--overwrite with --resume auto: --overwrite moves the run aside, --resume continues it: "
                         "choose one")
    source = named.resolve().parent.parent if named is not None else None
    path = Path(cfg.output_dir) if cfg.output_dir else (source or Path(default_run_dir(cfg)))
    if ".." in path.parts:  # runs/r/plots/.. is runs/r: what is locked, moved aside and written is named as itself
        path = path.resolve()
    forked = source is not None and path.resolve() != source
    if overwrite and named is not None and not forked:
        raise UsageError(f"--overwrite would move aside {path}, whose checkpoint --resume {named} names: drop "
                         "--overwrite, or resume into a new --output-dir")
    if named is not None:  # a named checkpoint must be usable before anything is locked, moved or written
        reason = checkpoints.unusable(named)
        if reason:
            raise UsageError(f"--resume {named}: {reason}: name another checkpoint, or pass --resume auto")
        fingerprint.check_resumable(named, checkpoints.read_state(named), current, topology)

    lock = RunLock.acquire(path, notify)
    try:
        contents = Contents.of(path)
        if contents.foreign:
            raise UsageError(f"--output-dir {path} holds files emodist did not write ({contents.listing()}): choose a "
                             "new or empty --output-dir (nothing there was changed)")
        if overwrite and contents.entries:
            if Path.cwd().resolve().is_relative_to(path.resolve()):  # the process's directory would move with it
                raise UsageError(f"--overwrite would move aside {path}, which this command runs in: run it from "
                                 "outside that directory (e.g. its parent), with --output-dir naming it from there")
            lock.release()
            aside = move_aside(path)
            notify(f"emodist: moved the run that was in {path} to {aside} (--overwrite); delete it when it is "
                   "no longer needed")
            lock = RunLock.acquire(path, notify)
            contents = Contents.of(path)
        run = _decide(cfg, current, topology, path, contents, resume, named, forked, notify)
        run.lock = lock
        run.may_only_finish = run.fork_of is None and "summary.json" not in contents.entries
        if run.checkpoint is None and not run.finished:  # from step 0: only emodist's start files are replaced
            _remove(path, [*START_FILES, *EXPENDABLE])
            config_mod.dump(cfg, path / "config.yaml")
        if not run.finished:  # what is in the directory from now on is this run's
            fork = {"fork_of": str(run.checkpoint.resolve())} if run.fork_of else {}  # a restart goes back there
            (path / MARKER).write_text(json.dumps({"emodist_run": 1, **fork}) + "\n")
        return run
    except BaseException:
        lock.release()
        raise


def _decide(cfg: RunConfig, current: dict, topology: dict, path: Path, contents: Contents, resume: str,
            named: Path | None, forked: bool, notify) -> Run:
    """The Run this launch makes of `path` (no file is changed here); UsageError if it cannot."""
    trained = contents.trained()
    if named is not None:
        again = _forked_from(path) == named.resolve() and set(trained) <= set(EXPENDABLE)  # stopped before a save
        if forked and trained and not again:  # only a fork that stopped before its first checkpoint starts again
            raise UsageError(f"--resume {named} starts a new run in --output-dir {path}, which already holds "
                             f"{contents.listing()}: choose a new or empty --output-dir, or pass --overwrite to "
                             "move that aside")
        return Run(path, named, fork_of=named.resolve().parent.parent if forked else None)
    if resume == "none":
        if trained:
            raise UsageError(f"--output-dir {path} already holds a run ({', '.join(trained)}): continue it with "
                             "--resume auto, choose a new --output-dir, or pass --overwrite to move it aside")
        return Run(path)

    # --resume auto
    if not contents.entries:
        notify(f"emodist: no run in {path} yet: starting it (--resume auto)")
        return Run(path)
    checkpoint, skipped = checkpoints.latest_checkpoint(path)
    for candidate, reason in skipped:
        notify(f"emodist: skipped checkpoint {candidate}: {reason}")
    if checkpoint is not None:
        fingerprint.check_resumable(checkpoint, checkpoints.read_state(checkpoint), current, topology, "auto")
    finished = "summary.json" in trained
    if finished or checkpoint is None:
        earlier = _saved_config(path)
        if earlier is not None and checkpoint is None:  # a checkpoint was compared above; else the config
            changed = fingerprint.differences(fingerprint.fingerprint(earlier, current["labels"]), current)
            if changed:
                raise UsageError(f"--resume auto: {path} was started with other settings: {changed}: resume with "
                                 "its settings (--config on its config.yaml), or start a new run in a new --output-dir")
        same_length = earlier is not None and all(_get(earlier, k) == _get(cfg, k) for k in LENGTH_KEYS)
        if finished and same_length:
            return Run(path, finished=True)
        if checkpoint is None:
            if finished:
                raise UsageError(f"--resume auto: {path} holds a finished run and no complete checkpoint to train "
                                 "on from: leave train.epochs / train.max_steps as they were, or start a new run in "
                                 "a new --output-dir (nothing was changed)")
            kept, fork = [name for name in trained if name not in EXPENDABLE], _forked_from(path)
            if fork is not None and not kept:  # a fork stopped before its first checkpoint (or while it loaded)
                if reason := checkpoints.unusable(fork):  # from step 0 it would lose what it forked
                    raise UsageError(f"--resume auto: {path} is a fork of {fork}, stopped before its first checkpoint, "
                                     f"and that checkpoint cannot be read ({reason}): nothing was changed; fork "
                                     "another checkpoint (--resume PATH), or pass --overwrite to start afresh")
                fingerprint.check_resumable(fork, checkpoints.read_state(fork), current, topology, "auto")
                notify(f"emodist: {path} stopped before its first checkpoint: starting it again from {fork}, its source")
                return Run(path, fork, fork_of=fork.parent.parent)
            if kept or earlier is None:
                why = "; ".join(f"{c.name}: {r}" for c, r in skipped) or "there is none"
                raise UsageError(f"--resume auto: no complete checkpoint in {path} ({why}), and it holds "
                                 f"{', '.join(kept) or 'no config.yaml'}: nothing was changed; start a new run in a new "
                                 "--output-dir, or pass --overwrite to move this one aside and start again")
            notify(f"emodist: {path} stopped before its first checkpoint: starting it again from step 0")
    return Run(path, checkpoint)


def _forked_from(path: Path) -> Path | None:
    """The checkpoint the run in `path` was forked from (its marker records it), or None."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return Path(json.loads((path / MARKER).read_text(encoding="utf-8"))["fork_of"]).resolve()
    return None


def _saved_config(path: Path) -> RunConfig | None:
    """The config.yaml of the run in `path`, or None when there is none or it does not load."""
    if not (path / "config.yaml").is_file():
        return None
    try:
        return config_mod.load(config_file=str(path / "config.yaml"))
    except UsageError:
        return None


def _get(cfg: RunConfig, dotted: str):
    section, _, name = dotted.partition(".")
    return getattr(getattr(cfg, section), name)


def _finished_step(summary: Path) -> str:
    try:
        return str(int(json.loads(summary.read_text(encoding="utf-8"))["train"]["steps"]))
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


@dataclass
class Contents:
    """What a run directory holds (the lock left out)."""

    path: Path
    entries: list[str]
    marked: bool
    """Made by emodist (MARKER), or an emodist run from before the marker (config.yaml beside its outputs)."""

    @classmethod
    def of(cls, path: Path) -> Contents:
        entries = sorted(e.name for e in path.iterdir() if e.name != LOCK) if path.is_dir() else []
        legacy = "config.yaml" in entries and any(name in entries for name in ("metrics.jsonl", "summary.json",
                                                                               "checkpoints"))
        return cls(path, entries, MARKER in entries or legacy)

    @property
    def foreign(self) -> bool:
        """Holds files, and is not an emodist run directory."""
        return bool(self.entries) and not self.marked

    def trained(self) -> list[str]:
        """The outputs of training it holds (empty for a run that never trained). A checkpoints/ holding no
        step-N (only the .step-N.tmp of a first save that was killed) holds nothing of value."""
        return [name for name in self.entries if name in TRAINED
                and not (name == "checkpoints" and not any((self.path / name).glob("step-*")))]

    def listing(self, most: int = 5) -> str:
        shown = ", ".join(self.entries[:most])
        return shown + (f" and {len(self.entries) - most} more" if len(self.entries) > most else "")


def default_run_dir(cfg: RunConfig) -> str:
    """runs/<variant>-<date>-<time>; smoke runs sort together as runs/smoke-<variant>-<date>-<time>, so
    `python launch/compare.py runs/smoke-*` compares them."""
    prefix = "smoke-" if cfg.smoke else ""
    return f"runs/{prefix}{cfg.variant}-{time.strftime('%Y%m%d-%H%M%S')}"


ASIDE = ".replaced-"
"""What a run moved aside by --overwrite has in its name: `<name>.replaced-<time>`."""


def move_aside(path: Path) -> Path:
    """Rename `path` to a sibling `<name>.replaced-<time>` that does not exist yet; return it."""
    name = f"{path.name}{ASIDE}{time.strftime('%Y%m%d-%H%M%S')}"
    aside = free_name(path.with_name(name), lambda number: path.with_name(f"{name}-{number}"))
    try:
        os.rename(path, aside)
    except OSError as err:  # a mount point (EBUSY), a parent that is not writable
        raise UsageError(f"--overwrite: cannot move {path} aside to {aside.name} ({err.strerror}): nothing was "
                         "changed; choose a new --output-dir, or move or empty it yourself") from None
    return aside


def _remove(run_dir: Path, names) -> None:
    for name in names:
        target = run_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
