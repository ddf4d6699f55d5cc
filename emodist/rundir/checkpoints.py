"""Resumable checkpoints (save, verify, find, load) and the exported model.

    save_checkpoint(accelerator, run_dir, progress, keep_last=2, best_step=80)  # checkpoints/step-N/
    checkpoint, skipped = latest_checkpoint(run_dir)                            # the newest one that verifies
    state = load_checkpoint(accelerator, checkpoint, trainable_only=True)       # the progress to go on from
    export_model(accelerator, model, tokenizer, run_dir / "model", cfg)         # model/

Two kinds of checkpoint: `checkpoints/step-N/` is resumable state (`accelerator.save_state`: the
trainable weights, optimizer, scheduler, every rank's RNG, the sampler) plus `state.json` (progress,
topology, the settings a resume must not change, a manifest of every file with its size and SHA-256,
and a digest of state.json itself); `model/` is the trained model in HF format (sharded safetensors for
a full fine-tune, adapter + head for LoRA) with its tokenizer and label names.

A checkpoint is written under `.step-N.tmp/` and renamed into place once every rank has finished, so a
half-written one never carries the name. Before it is trusted, every file is checked against the
manifest, content included (`unusable`): a file cut short, changed or corrupted, or an edited
state.json, makes it skipped, and `latest_checkpoint` falls back to the one before. Older checkpoints
are deleted only after a new one is complete; the newest `keep_last` and the best (by dev f1_micro) are
kept (`timeline`, which also sets aside the checkpoints after the step a resume continues from). A save
the disk has no room for stops the run in one line (`NoSpace`), its partial files removed and the last
complete checkpoint kept. Under LoRA, frozen base weights (a 4-bit QLoRA base included)
are not saved: a resume rebuilds them from the base model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from emodist.rundir.timeline import STATE_FILE, rotate, step_of
from emodist.runtime.errors import (
    NoSpace,
    UsageError,
    format_bytes,
    free_bytes,
    out_of_space,
)
from emodist.runtime.files import finite, open_to_umask, sha256_of, write_json

REQUIRED = ("step", "epoch", "batches_in_epoch", "best", "loss_sum_per_rank", "loss_count", "num_processes",
            "distributed_type", "zero_stage", "fingerprint", "files", "digest")
"""What state.json must hold to be resumed from."""
SPACE_MARGIN = 1.05
"""A save needs this much more room than the last complete checkpoint took (RNG files, state.json)."""


# ---------------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(accelerator, run_dir: Path, progress: dict, keep_last: int, best_step: int | None = None,
                    trainable_only: bool = False) -> Path:
    """Save resumable state as checkpoints/step-N (a collective), then drop all but the newest `keep_last`
    and the one of `best_step`.

    `progress` goes into state.json (it must hold `step`); `trainable_only`: leave the frozen weights
    out (LoRA: they are rebuilt from the base on resume). Raises NoSpace, on every rank, when the disk
    has no room for it: before writing when the last checkpoint's size says so, else once a write failed
    (the partial files are removed; the complete checkpoints stay).
    """
    from accelerate.utils import broadcast_object_list

    root = run_dir / "checkpoints"
    step = progress["step"]
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    problem = [None]
    if accelerator.is_main_process:
        for stale in root.glob(".step-*.tmp"):  # saves that were killed mid-write (one writer: the run's lock)
            shutil.rmtree(stale)
        problem[0] = _room_problem(root, final)
    broadcast_object_list(problem)
    if problem[0]:
        raise NoSpace(problem[0])
    extra = {"exclude_frozen_parameters": True} if trainable_only and accelerator.state.deepspeed_plugin else {}
    failure = None
    try:
        accelerator.save_state(str(tmp), **extra)
    except Exception as err:  # noqa: BLE001 - a full disk surfaces as OSError, RuntimeError or SafetensorError
        if not out_of_space(err, tmp):
            raise
        failure = err
    if _any_rank(accelerator, failure is not None):  # every rank writes its own files (RNG state, ZeRO shards)
        raise _no_room_left(accelerator, root, final, tmp) from failure
    if accelerator.is_local_main_process:
        open_to_umask(tmp)  # safetensors writes -rw-------: a shared cluster's group must read what the umask allows
    files = _manifest(accelerator, tmp)
    if accelerator.is_main_process:
        state = {**progress, "files": files}
        write_json(tmp / STATE_FILE, {**state, "digest": _digest(state)})
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        rotate(root, final, keep_last, best_step)
    accelerator.wait_for_everyone()
    return final


def _any_rank(accelerator, flag: bool) -> bool:
    import torch

    flags = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(flags, reduction="sum").item() > 0)


def _size(directory: Path) -> int:
    """Bytes of the files in `directory` (a partial save, which has no manifest yet)."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _saved_size(checkpoint: Path) -> int:
    """Bytes of a complete checkpoint, from the manifest `latest_checkpoint` has just checked."""
    return sum(entry["size"] for entry in read_state(checkpoint)["files"].values())


def _room_problem(root: Path, final: Path) -> str | None:
    """A NoSpace message when the disk cannot hold another checkpoint as large as the last complete one."""
    last, _ = latest_checkpoint(root.parent, content=False)
    if last is None or last == final:
        return None
    needed, free = _saved_size(last) * SPACE_MARGIN, free_bytes(root)
    if free is None or free >= needed:
        return None
    return (f"no room on the disk of {root} for checkpoint {final.name}: it needs about {format_bytes(int(needed))} "
            f"(the size of {last.name}) and {format_bytes(free)} are free; nothing was written, {last.name} is the "
            "last complete checkpoint: free some space, then resume with --resume auto")


def _no_room_left(accelerator, root: Path, final: Path, tmp: Path) -> NoSpace:
    """Remove the partial `tmp` (main process) and say what the save needed and what was kept."""
    written = _size(tmp) if tmp.exists() else 0
    free = free_bytes(root)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    last, _ = latest_checkpoint(root.parent, content=False)
    needed = f"about {format_bytes(int(_saved_size(last) * SPACE_MARGIN))} (the size of {last.name})" if last else \
        f"more than the {format_bytes(written)} it had written"
    kept = f"{last.name}, the last complete checkpoint, is kept" if last else "no checkpoint was complete yet"
    return NoSpace(f"no space left on the disk of {root} while saving checkpoint {final.name}: it needs {needed}, "
                   f"{format_bytes(free)} were free; the partial checkpoint was removed and {kept}: free some space, "
                   "then resume with --resume auto")


def _manifest(accelerator, tmp: Path) -> dict[str, dict]:
    """{file: {"size", "sha256"}} of every file in `tmp`; the ranks hash a share each (a collective)."""
    from accelerate.utils import broadcast_object_list, gather_object

    names = [sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
             if accelerator.is_main_process else None]
    broadcast_object_list(names)  # one listing: another node's view of a shared disk may lag
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = {}
    for index, name in enumerate(names[0]):
        if index % world == rank:
            try:
                mine[name] = _describe_file(tmp / name)
            except OSError:
                mine[name] = None  # not visible from this node yet: the main process hashes it
    hashed: dict = {}
    for part in gather_object([mine]):
        hashed.update(part)
    if accelerator.is_main_process:
        hashed = {name: hashed.get(name) or _describe_file(tmp / name) for name in names[0]}
    return hashed


def _describe_file(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


def _digest(state: dict) -> str:
    """The SHA-256 of state.json's content without its digest: an edited state.json no longer matches."""
    content = finite({k: v for k, v in state.items() if k != "digest"})  # as written: a NaN reads back as null
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Finding and checking checkpoints


def read_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def unusable(checkpoint: Path, content: bool = True) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when it can.

    Checks that state.json reads, holds what a resume needs and matches its digest, and that every file it
    lists is there at its size and (`content`) with its SHA-256.
    """
    if not checkpoint.is_dir():
        return "no such checkpoint directory"
    try:
        state = read_state(checkpoint)
    except FileNotFoundError:
        return f"no {STATE_FILE} (a save that never finished)"
    except (OSError, ValueError) as err:
        return f"its {STATE_FILE} does not read ({type(err).__name__})"
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED):
        missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
        return (f"its {STATE_FILE} lacks {', '.join(missing[:3])} (written by an older emodist, or not by emodist): "
                "resume it with the emodist that wrote it")
    if state["digest"] != _digest(state):
        return f"its {STATE_FILE} was changed after the save (its digest does not match)"
    if checkpoint.name.startswith("step-") and checkpoint.name != f"step-{state['step']}":
        return f"its {STATE_FILE} is of step {state['step']}"
    files = state["files"] if isinstance(state["files"], dict) else {}
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if not isinstance(expected, dict) or not isinstance(expected.get("size"), int):
            return f"its {STATE_FILE} lists {name} without its size"
        if path.stat().st_size != expected["size"]:
            return f"{name} is cut short or has grown ({path.stat().st_size:,} bytes, saved with {expected['size']:,})"
        if content and _describe_file(path)["sha256"] != expected.get("sha256"):
            return f"{name} does not match the hash taken when it was saved (corrupted or changed since)"
    return None


def latest_checkpoint(run_dir: Path, content: bool = True) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest usable checkpoints/step-N of `run_dir` or None, [(newer checkpoint, why it was skipped)]).

    `content`: check every file's hash (see `unusable`); False checks sizes only.
    """
    candidates = [p for p in (run_dir / "checkpoints").glob("step-*") if p.name.split("-")[1].isdigit()]
    skipped = []
    for checkpoint in sorted(candidates, key=step_of, reverse=True):
        reason = unusable(checkpoint, content)
        if reason is None:
            return checkpoint, skipped
        skipped.append((checkpoint, reason))
    return None, skipped


def load_checkpoint(accelerator, checkpoint: Path, trainable_only: bool) -> dict:
    """Restore every rank from `checkpoint` (a collective); return its state.json."""
    extra = {"load_module_strict": False} if trainable_only and accelerator.state.deepspeed_plugin else {}
    try:
        accelerator.load_state(str(checkpoint), **extra)
    except UsageError:
        raise
    except (RuntimeError, OSError, KeyError, ValueError) as err:  # files that verify, but not of this model
        first = (str(err).splitlines() or [""])[0][:200]
        raise UsageError(f"--resume {checkpoint}: it does not load into this model ({type(err).__name__}: {first}); "
                         "nothing of the run was changed: resume from another checkpoint (--resume PATH), or start "
                         "a new run in a new --output-dir") from None
    return read_state(checkpoint)


# ---------------------------------------------------------------------------------------------------
# The exported model


