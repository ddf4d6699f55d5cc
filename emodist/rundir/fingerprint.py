"""What a resume must share with its checkpoint: the fingerprint a checkpoint's state.json records (the settings
that change the model, the data or the optimizer state it is restored into, its labels, the identity of its splits
and of a LoRA run's base weights), and the one-line refusal of a checkpoint that does not fit.

    current = fingerprint(cfg, labels, data_identity)
    check_resumable(checkpoint, read_state(checkpoint), current, topology)   # UsageError naming what differs

The length of training may change (that is how a run is trained further); so may where the cache is and
gradient checkpointing. The data's content decides, wherever it is read from; a local base is the same however
its directory is named (relative, `./x/`, absolute).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from emodist.config import RunConfig
from emodist.runtime.errors import UsageError

RESUME_INVARIANT = ("model.", "data.", "optim.", "train.seed", "train.global_batch_size", "train.micro_batch_size",
                    "train.pos_weight", "train.loss", "train.focal_gamma", "train.asl_")
"""The settings a resumed run must share with its checkpoint: they change the model, the data or the optimizer state it
is restored into."""
RESUME_FREE = ("data.cache_dir", "model.gradient_checkpointing")
"""Keys under RESUME_INVARIANT that a resume may change: where the cache is, and recomputing activations in the
backward pass (the same numbers, less memory: what lets a requeued job fit a smaller GPU)."""
NAME_KEY = "model.name_or_path"
BASE_KEY = "model.base"
"""The fingerprint's key of a LoRA run's frozen base weights (`emodist.models.base_identity`): not saved."""
SPLIT_KEY = "data.split."
"""The fingerprint's keys of the splits' identity (`emodist.data.identity`)."""


def fingerprint(cfg: RunConfig, labels: list[str], data: dict[str, str] | None = None) -> dict:
    """The settings a resume must share with its checkpoint, as {dotted key: value}, plus the labels and `data`,
    the splits' identity (`emodist.data.identity`: their sizes and content hashes)."""
    flat = _flatten(cfg.to_dict())
    kept = {k: v for k, v in flat.items() if k.startswith(RESUME_INVARIANT) and k not in RESUME_FREE}
    return {**kept, "labels": list(labels), **(data or {})}


def fingerprint_hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def differences(saved: dict, current: dict) -> str:
    """The settings that differ between two fingerprints, e.g. `model.lora.r=16 there, 8 here`; "" if none."""
    defaults = _flatten(RunConfig().to_dict())  # a checkpoint older than a setting was trained at its default
    saved, current = {**defaults, **saved}, {**defaults, **current}
    if BASE_KEY not in saved:  # saved before emodist identified the base, or a base not on this machine then
        current = {k: v for k, v in current.items() if k != BASE_KEY}
    if not any(k.startswith(SPLIT_KEY) for k in saved):  # saved before emodist hashed the data: its path decides
        current = {k: v for k, v in current.items() if not k.startswith(SPLIT_KEY)}
    elif any(k.startswith(SPLIT_KEY) for k in current):  # the data's content decides, wherever it is read from and
        # whichever name detected its layout (a directory that now holds two data sets needs data.dataset named)
        saved, current = ({k: v for k, v in d.items() if k not in ("data.data_dir", "data.dataset")} for d in (saved, current))
    if _same_base(saved, current):  # one base directory, named two ways (relative, ./x/, absolute)
        current = {**current, NAME_KEY: saved.get(NAME_KEY)}
    keys = sorted(set(saved) | set(current), key=lambda k: (k.startswith(SPLIT_KEY), k))  # settings first: they say why
    changed = [k for k in keys if saved.get(k) != current.get(k) and k not in RESUME_FREE]  # older saves hold them
    shown = "; ".join(_labels_change(saved[k], current[k]) if k == "labels" and isinstance(saved.get(k), list)
                      and isinstance(current.get(k), list) else f"{k}={_short(saved.get(k))} there, "
                      f"{_short(current.get(k))} here" for k in changed[:3])
    return shown + (f" (and {len(changed) - 3} more)" if len(changed) > 3 else "")


def _same_base(saved: dict, current: dict) -> bool:
    """Whether two fingerprints' model.name_or_path name one base: the same local directory (a relative name read
    from here). Not bases whose weights are identified alike (`BASE_KEY` samples them: it may miss a change)."""
    a, b = saved.get(NAME_KEY), current.get(NAME_KEY)
    if a == b or not (isinstance(a, str) and isinstance(b, str)):
        return a == b
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_resumable(checkpoint: Path, state: dict, current: dict, topology: dict, resume: str | None = None) -> None:
    """Refuse, in one line, to resume `checkpoint` into a run it does not fit.

    `current`: this run's `fingerprint`; `topology`: its num_processes, distributed_type and zero_stage;
    `resume`: the --resume value that chose it (default: the checkpoint's path).
    """
    said = f"--resume {checkpoint}: it" if resume in (None, str(checkpoint)) else f"--resume {resume}: {checkpoint}"
    changed = differences(state["fingerprint"], current)
    if changed.startswith(f"{BASE_KEY}=") and "; " not in changed:
        raise UsageError(f"{said} holds LoRA adapters trained on other base weights than {current.get('model.name_or_path')}"
                         " has now (a new hub snapshot, or files written over): resume on the base it trained on "
                         "(model.name_or_path=its directory), or start a new run in a new --output-dir")
    if changed and all(part.startswith(SPLIT_KEY) for part in changed.split("; ")):
        raise UsageError(f"{said} was trained on other data: {changed}: resume with the data it was trained on, or "
                         "start a new run in a new --output-dir")
    if changed:
        raise UsageError(f"{said} was trained with other settings: {changed}: resume with its settings (--config on "
                         "the run's config.yaml), or start a new run in a new --output-dir")
    for key, reason in (("num_processes", "each rank's data position and RNG stream belong to its rank"),
                        ("zero_stage", "DeepSpeed cannot re-partition optimizer states for another stage"),
                        ("distributed_type", "its checkpoint format belongs to the topology")):
        if state.get(key) != topology[key]:
            raise UsageError(f"{said} was written with {key}={state.get(key)}, this run has "
                             f"{key}={topology[key]}; {reason}. Launch with the same accelerate config and "
                             "--num_processes, or start a new run in a new --output-dir")


def _labels_change(saved: list, current: list) -> str:
    """Which labels one side has and the other not (28 names do not fit a line), or that their order changed."""
    gone, new = [n for n in saved if n not in current], [n for n in current if n not in saved]
    changes = [*(f"{_short(n)} only there" for n in gone[:3]), *(f"{_short(n)} only here" for n in new[:3])]
    return "labels: " + (", ".join(changes) or f"the same {len(saved)} in another order")


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
