"""The run directory and what is written into it: resumable checkpoints and the exported model.

    run_dir, resume_from = prepare_run_dir(cfg, accelerator, labels, topology, resume="auto")
    save_checkpoint(accelerator, run_dir, progress, keep_last=2, best_step=80)  # checkpoints/step-N/
    state = load_checkpoint(accelerator, resume_from, trainable_only=True)       # the progress to go on from
    export_model(accelerator, model, tokenizer, run_dir / "model", cfg)         # model/

Two kinds of checkpoint: `checkpoints/step-N/` is resumable state (`accelerator.save_state`: the
trainable weights, optimizer, scheduler, every rank's RNG, the sampler) plus `state.json` (progress,
topology, the settings a resume must not change, and a manifest of every file with its size);
`model/` is the trained model in HF format (sharded safetensors for a full fine-tune, adapter + head
for LoRA) with its tokenizer and label names.

A checkpoint is written under `.step-N.tmp/` and renamed into place once every rank has finished, so
a half-written one never carries the name; `latest_checkpoint` also checks the manifest, so one
truncated later is skipped. Older checkpoints are deleted only after a new one is complete; the
newest `keep_last` and the best (by dev f1_micro) are kept. Under LoRA, frozen base weights (a 4-bit
QLoRA base included) are not saved: a resume rebuilds them from the base model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from accelerate.utils import broadcast_object_list

from emodist import config as config_mod
from emodist.config import RunConfig
from emodist.errors import UsageError

# What a run that started training leaves; a directory holding any of them is never silently replaced.
RUN_OUTPUTS = ("metrics.jsonl", "summary.json", "checkpoints", "model")
# What every start writes again (a start that failed before training leaves only these).
START_FILES = ("config.yaml", "smoke-base")
STATE_FILE = "state.json"
# Settings a resumed run must share with its checkpoint: they change the model, the data or the
# optimizer state it is restored into (the length of training may change).
RESUME_INVARIANT = ("model.", "data.", "optim.", "train.seed", "train.global_batch_size", "train.micro_batch_size",
                    "train.pos_weight")
RESUME_FREE = ("data.cache_dir",)


def prepare_run_dir(cfg: RunConfig, accelerator, labels: list[str], topology: dict, overwrite: bool = False,
                    resume: str = "none") -> tuple[Path, Path | None]:
    """Create the run directory (the same on every rank), write config.yaml; return it and the checkpoint
    to resume from (None: start from scratch).

    `resume`: `none` (a directory holding a run is refused unless `overwrite`), `auto` (the newest
    complete checkpoint in the run directory, if any) or the path of a checkpoint directory. A
    checkpoint must fit this run (`check_resumable`: settings, `labels`, `topology`) before anything
    in the directory is touched. Raises UsageError on every rank when the directory cannot be used.
    """
    problem = checkpoint = None
    if resume not in ("none", "auto"):
        checkpoint = Path(resume)
        if not is_complete(checkpoint):
            problem = (f"--resume {resume}: not a complete checkpoint (no readable {STATE_FILE}, or a file missing "
                       "or cut short): pass a checkpoints/step-N directory, or --resume auto")
        cfg.output_dir = cfg.output_dir or str(checkpoint.resolve().parent.parent)
    run_dir = Path(cfg.output_dir or default_run_dir(cfg))
    if resume == "auto":
        checkpoint = latest_checkpoint(run_dir)
    outputs = [f for f in RUN_OUTPUTS if (run_dir / f).exists()]
    if outputs and not overwrite and resume == "none":
        problem = (f"--output-dir {run_dir} already holds a run ({', '.join(outputs)}): continue it with "
                   "--resume auto, choose a new --output-dir, or pass --overwrite to replace it")
    if checkpoint is not None and problem is None:
        try:
            check_resumable(checkpoint, read_state(checkpoint), fingerprint(cfg, labels), topology)
        except UsageError as err:
            problem = str(err)
    decided = [str(run_dir), problem, str(checkpoint) if checkpoint else None]
    broadcast_object_list(decided)  # rank 0 decides: a default name holds its timestamp
    if decided[1]:
        raise UsageError(decided[1])
    run_dir, checkpoint = Path(decided[0]), (Path(decided[2]) if decided[2] else None)
    cfg.output_dir = str(run_dir)
    if accelerator.is_main_process:
        if checkpoint is None:  # from scratch: nothing of an earlier attempt may leak into this run
            _remove(run_dir, [*outputs, *START_FILES])
        else:  # the steps after the checkpoint are trained (and logged) again
            _remove(run_dir, ["summary.json"])
            truncate_metrics(run_dir / "metrics.jsonl", after_step=read_state(checkpoint)["step"])
        run_dir.mkdir(parents=True, exist_ok=True)
        config_mod.dump(cfg, run_dir / "config.yaml")
    accelerator.wait_for_everyone()
    return run_dir, checkpoint


def _remove(run_dir: Path, names) -> None:
    for name in names:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def default_run_dir(cfg: RunConfig) -> str:
    """runs/<variant>-<date>-<time>; smoke runs sort together as runs/smoke-<variant>-<date>-<time>, so
    `python launch/compare.py runs/smoke-*` compares them."""
    prefix = "smoke-" if cfg.smoke else ""
    return f"runs/{prefix}{cfg.variant}-{time.strftime('%Y%m%d-%H%M%S')}"


def truncate_metrics(path: Path, after_step: int) -> None:
    """Drop the records logged after `after_step`: a resumed run logs those steps again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= after_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            break  # a line cut short by a kill: everything from here was after the checkpoint
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(accelerator, run_dir: Path, progress: dict, keep_last: int, best_step: int | None = None,
                    trainable_only: bool = False) -> Path:
    """Save resumable state as checkpoints/step-N (a collective), then drop all but the newest `keep_last`
    and the one of `best_step`.

    `progress` goes into state.json (it must hold `step`); `trainable_only`: leave the frozen weights
    out (LoRA: they are rebuilt from the base on resume).
    """
    root = run_dir / "checkpoints"
    step = progress["step"]
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # left by an earlier attempt that was killed mid-write
    accelerator.wait_for_everyone()
    extra = {"exclude_frozen_parameters": True} if trainable_only and accelerator.state.deepspeed_plugin else {}
    accelerator.save_state(str(tmp), **extra)
    accelerator.wait_for_everyone()  # every rank writes its own files (RNG state, ZeRO shards) into tmp
    if accelerator.is_main_process:
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        write_json(tmp / STATE_FILE, {**progress, "files": files})
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        complete = sorted((p for p in root.glob("step-*") if (p / STATE_FILE).exists()), key=_step_of)
        keep = set(complete[-keep_last:]) | {root / f"step-{best_step}"}
        for old in complete:
            if old not in keep:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


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


# ---------------------------------------------------------------------------------------------------
# Finding and checking checkpoints


def _step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def read_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def is_complete(checkpoint: Path) -> bool:
    """Whether `checkpoint` has a readable state.json and every file it lists, at its recorded size."""
    try:
        files = read_state(checkpoint)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((checkpoint / name).is_file() and (checkpoint / name).stat().st_size == size
               for name, size in files.items())


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoints/step-N of `run_dir` (incomplete ones are skipped), or None."""
    candidates = [p for p in (run_dir / "checkpoints").glob("step-*") if p.name.split("-")[1].isdigit()]
    return next((p for p in sorted(candidates, key=_step_of, reverse=True) if is_complete(p)), None)


def fingerprint(cfg: RunConfig, labels: list[str]) -> dict:
    """The settings a resume must share with its checkpoint, as {dotted key: value}, plus the labels."""
    flat = _flatten(cfg.to_dict())
    kept = {k: v for k, v in flat.items() if k.startswith(RESUME_INVARIANT) and k not in RESUME_FREE}
    return {**kept, "labels": list(labels)}


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


def check_resumable(checkpoint: Path, state: dict, current: dict, topology: dict) -> None:
    """Refuse, in one line, to resume `checkpoint` into a run it does not fit.

    `current`: this run's `fingerprint`; `topology`: its num_processes, distributed_type and zero_stage.
    """
    saved = state["fingerprint"]
    changed = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if changed:
        shown = "; ".join(f"{k}={_short(saved.get(k))} there, {_short(current.get(k))} here" for k in changed[:3])
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise UsageError(f"--resume {checkpoint}: it was trained with other settings: {shown}{more}: resume with "
                         "its settings (--config on the run's config.yaml), or start a new run in a new --output-dir")
    for key, reason in (("num_processes", "each rank's data position and RNG stream belong to its rank"),
                        ("zero_stage", "DeepSpeed cannot re-partition optimizer states for another stage"),
                        ("distributed_type", "its checkpoint format belongs to the topology")):
        if state.get(key) != topology[key]:
            raise UsageError(f"--resume {checkpoint}: written with {key}={state.get(key)}, this run has "
                             f"{key}={topology[key]}; {reason}. Launch with the same accelerate config and "
                             "--num_processes, or start a new run in a new --output-dir")


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def load_checkpoint(accelerator, checkpoint: Path, trainable_only: bool) -> dict:
    """Restore every rank from `checkpoint` (a collective); return its state.json."""
    extra = {"load_module_strict": False} if trainable_only and accelerator.state.deepspeed_plugin else {}
    accelerator.load_state(str(checkpoint), **extra)
    return read_state(checkpoint)


# ---------------------------------------------------------------------------------------------------
# The exported model


def export_model(accelerator, model, tokenizer, directory: Path, cfg: RunConfig) -> Path:
    """Write the trained model in HF format to `directory` (gathers on every rank, writes on rank 0).

    Full fine-tune: `save_pretrained` with sharded safetensors (export.max_shard_size).
    LoRA: `adapter_config.json` + `adapter_model.safetensors` (the head included, via modules_to_save),
    and the base's config.json carrying id2label/label2id. The tokenizer is saved in both cases.
    """
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # under ZeRO-3 every rank takes part in the gather
    if accelerator.is_main_process:
        tmp = directory.with_name(directory.name + ".tmp")
        unwrapped = accelerator.unwrap_model(model)
        if cfg.model.method == "lora":
            unwrapped.save_pretrained(tmp, state_dict=state_dict)
            base = unwrapped.get_base_model()
            base.config.architectures = [type(base).__name__]  # the classifier, not the checkpoint it came from
            base.config.save_pretrained(tmp)
        else:
            unwrapped.save_pretrained(tmp, state_dict=state_dict, max_shard_size=cfg.export.max_shard_size)
        tokenizer.save_pretrained(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    accelerator.wait_for_everyone()
    return directory


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
