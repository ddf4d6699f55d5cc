"""A run's one line of steps, from step 0 to its newest checkpoint: which checkpoints it keeps, and what a
resume drops of what came after the step it goes on from (checkpoints set aside, records of metrics.jsonl).

    dropped = rotate(root, final, keep_last=2, best_step=80)   # after a save: what went, never `final`
    aside = set_aside_after(root, step=192)                     # a resume from step 192: the later ones
    truncate_metrics(run_dir / "metrics.jsonl", after_step=192) # and the records logged after it

A resume continues from a checkpoint; any checkpoint after its step belongs to steps the run leaves behind:
those of a rewind (`--resume checkpoints/step-192` of a run at 512), or those `--resume auto` passed over
because they do not verify. Left among the run's checkpoints, they outnumbered the new ones, so the rotation
deleted each new checkpoint in the save that wrote it (a requeued job came back to step 192 forever), and a
later `--resume auto` continued from the abandoned steps without a word. `set_aside_after` moves them, whole
and untouched, to `checkpoints/superseded-<date>-<time>/`, which nothing reads, for the user to inspect or
delete.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from emodist.runtime.files import free_name, write_text_atomic

STATE_FILE = "state.json"
"""What a complete checkpoint holds besides accelerate's files: written last, before its rename into place."""


def step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def _checkpoints(root: Path) -> list[Path]:
    """The `step-N` directories of `root`, complete or not, oldest first."""
    found = [p for p in root.glob("step-*") if p.name.split("-")[1].isdigit() and p.is_dir()]
    return sorted(found, key=step_of)


def rotate(root: Path, final: Path, keep_last: int, best_step: int | None) -> list[Path]:
    """After `final` was saved: delete all but the newest `keep_last` complete checkpoints, the one of
    `best_step` and `final` itself, and the incomplete ones before `final` (a deletion that a kill cut short
    leaves a checkpoint without its state.json: never resumable, and as large as the others); return them."""
    complete = [p for p in _checkpoints(root) if (p / STATE_FILE).exists()]
    keep = {*complete[-keep_last:], root / f"step-{best_step}", final}
    dropped = [p for p in _checkpoints(root) if p not in keep and step_of(p) < step_of(final)]
    for old in dropped:
        shutil.rmtree(old)
    return dropped


def set_aside_after(root: Path, step: int) -> Path | None:
    """Move every checkpoint after `step` (complete or not) into `root/superseded-<date>-<time>/`; return
    that directory, or None when there were none."""
    later = [p for p in _checkpoints(root) if step_of(p) > step]
    if not later:
        return None
    name = f"superseded-{time.strftime('%Y%m%d-%H%M%S')}"
    aside = free_name(root / name, lambda number: root / f"{name}-{number}")  # a second rewind within a second
    aside.mkdir()
    for checkpoint in later:
        checkpoint.rename(aside / checkpoint.name)
    return aside


def truncate_metrics(path: Path, after_step: int, training_only_at_step: bool = False) -> None:
    """Drop the records logged after `after_step`: a resumed run logs those steps again. `training_only_at_step`:
    of the records of `after_step` itself, keep only the training's (train/loss), not a final evaluation's."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            if record["step"] < after_step or (record["step"] == after_step and (
                    not training_only_at_step or "train/loss" in record)):
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            break  # a line cut short by a kill: everything from here was after the checkpoint
    write_text_atomic(path, "".join(line + "\n" for line in kept))
