"""The run directory and what is written into it: resumable checkpoints and the exported model.

    run_dir = prepare_run_dir(cfg, accelerator, overwrite=False)
    save_checkpoint(accelerator, run_dir, step=100, epoch=0, keep_last=2)   # checkpoints/step-100/
    export_model(accelerator, model, tokenizer, run_dir / "model", cfg)     # model/

Two kinds of checkpoint: `checkpoints/step-N/` is resumable state (`accelerator.save_state`: weights,
optimizer, scheduler, every rank's RNG) plus `state.json` with the progress; `model/` is the trained
model in HF format (sharded safetensors for a full fine-tune, adapter + head for LoRA) with its
tokenizer and label names. Directories are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

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


def prepare_run_dir(cfg: RunConfig, accelerator, overwrite: bool = False) -> Path:
    """Create the run directory (the same on every rank), refuse to clobber a run, write config.yaml.

    Raises UsageError on every rank when the directory already holds a run and `overwrite` is off.
    """
    run_dir = Path(cfg.output_dir or default_run_dir(cfg))
    outputs = [f for f in RUN_OUTPUTS if (run_dir / f).exists()]
    problem = None
    if outputs and not overwrite:
        problem = (f"--output-dir {run_dir} already holds a run ({', '.join(outputs)}): choose a new "
                   "--output-dir, or pass --overwrite to replace it")
    decided = [str(run_dir), problem]
    broadcast_object_list(decided)  # rank 0 decides: a default name holds its timestamp
    if decided[1]:
        raise UsageError(decided[1])
    run_dir = Path(decided[0])
    cfg.output_dir = str(run_dir)
    if accelerator.is_main_process:
        for f in (*outputs, *START_FILES):
            target = run_dir / f
            if not target.exists():
                continue
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
        config_mod.dump(cfg, run_dir / "config.yaml")
    accelerator.wait_for_everyone()
    return run_dir


def default_run_dir(cfg: RunConfig) -> str:
    suffix = "-smoke" if cfg.smoke else ""
    return f"runs/{cfg.variant}{suffix}-{time.strftime('%Y%m%d-%H%M%S')}"


def save_checkpoint(accelerator, run_dir: Path, step: int, epoch: int, keep_last: int) -> Path:
    """Save resumable state as checkpoints/step-N (a collective), then drop all but the newest `keep_last`."""
    root = run_dir / "checkpoints"
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank writes its own files (RNG state, ZeRO shards) into tmp
    if accelerator.is_main_process:
        write_json(tmp / "state.json", {"step": step, "epoch": epoch, "num_processes": accelerator.num_processes})
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        complete = sorted((p for p in root.glob("step-*") if (p / "state.json").exists()),
                          key=lambda p: int(p.name.split("-")[1]))
        for old in complete[:-keep_last]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


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
