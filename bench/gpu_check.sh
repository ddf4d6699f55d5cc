#!/usr/bin/env bash
# The prepared GPU check: everything that needs CUDA, in one script for one call on a lent GPU machine.
#
#   bench/gpu_check.sh [RESULTS_DIR] [all|real]     (default: $OUT when set, else runs/gpu-check; all)
#
# 1. every variant --smoke on one GPU (accelerate_configs/single_gpu.yaml): the real CUDA paths of
#    bf16 autocast, 4-bit NF4 (bitsandbytes CUDA kernels) and paged 8-bit AdamW;
# 2. mistral-lora --smoke under FSDP2 (fsdp.yaml) and DeepSpeed ZeRO-3 (deepspeed_zero3.yaml) on every
#    visible GPU, and mistral-qlora under ZeRO-2 and ZeRO-3 (4-bit storage in bf16);
# 3. minilm (real size) with batches grouped by length, random, random packed (data.packing), and grouped with
#    its blocks compiled (train.compile);
#    the tests marked `gpu` (pytest -m gpu);
# 4. real sizes with random weights (model.smoke_size=real, no download), every batch padded to 128 tokens:
#    DistilBERT-base full fine-tune, Mistral-7B QLoRA (4-bit NF4, LoRA r=16, micro-batch 8, gradient
#    checkpointing; the target is <= 10 GiB peak reserved) and Mistral-7B bf16 LoRA when the card has
#    40 GiB or more. Only this part: bench/gpu_check.sh RESULTS_DIR real (the 7B base is built once, ~15 GiB).
#    Gemma-2B LoRA (bf16 base) runs at its real size too, on one GPU and under ZeRO-3 on two when there are two.
# It ends with one table (samples/s, tokens/s, median step, MFU, peak memory per rank, the memory plan and its
# ratio to the peak reserved, dev F1) read from each summary.json (the tiny smoke models' MFU says nothing;
# the real-size rows' does; the plan is meant within 15% of the reserved peak at real sizes):
# copy it, with the card's name, into bench/RESULTS.md.
#
# Python packages the GPU image may lack (deepspeed, bitsandbytes, datasets, ...) are installed from
# wheels/ when that folder exists (pip download them on a machine with PyPI access and carry the folder).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 3
results=${1:-${OUT:-runs/gpu-check}}
parts=${2:-all}
mkdir -p "$results"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

if [ -d wheels ]; then
  python3 -m pip install --quiet --no-index --find-links wheels -e . || exit 3
fi
python3 - <<'PY' || exit 3
import importlib, sys, torch
missing = [m for m in ("accelerate", "transformers", "peft", "bitsandbytes", "deepspeed", "datasets", "rich", "sklearn")
           if importlib.util.find_spec(m) is None]
if missing or not torch.cuda.is_available():
    sys.exit(f"gpu_check: missing {missing or 'a CUDA device'}")
print(f"gpu_check: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, torch {torch.__version__}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$results/gpus.txt"
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")

run() {  # run NAME CONFIG PROCESSES VARIANT [KEY=VALUE ...]
  local name=$1 config=$2 processes=$3 variant=$4; shift 4
  local started=$SECONDS
  python3 -m accelerate.commands.launch --config_file "accelerate_configs/$config" --num_processes "$processes" \
    launch/train.py --variant "$variant" --smoke --output-dir "$results/$name" --overwrite "$@" \
    > "$results/$name.log" 2>&1
  echo "$name rc=$? wall=$((SECONDS - started))s" | tee -a "$results/runs.txt"
}

if [ "$parts" = all ]; then
  for variant in distilbert gemma-lora mistral-lora mistral-qlora minilm; do
    run "$variant" single_gpu.yaml 1 "$variant"
  done
  run fsdp-mistral-lora fsdp.yaml "$gpus" mistral-lora
  run zero3-mistral-lora deepspeed_zero3.yaml "$gpus" mistral-lora
  run zero2-mistral-qlora deepspeed_zero2.yaml "$gpus" mistral-qlora
  run zero3-mistral-qlora deepspeed_zero3.yaml "$gpus" mistral-qlora

  # data.packing on CUDA (sdpa with a block-diagonal mask): minilm at its real size, 200 steps of batches
  # grouped by length, random, and random packed (the tests check the logits on CPU; this, the CUDA kernels)
  batches=(model.smoke_size=real train.max_steps=200 train.eval_every_steps=0 train.save_every_steps=0 track.plots=false
           "data.cache_dir=$results/cache")
  run minilm-grouped single_gpu.yaml 1 minilm "${batches[@]}" data.group_by_length=true
  run minilm-random single_gpu.yaml 1 minilm "${batches[@]}" data.group_by_length=false
  run minilm-packed single_gpu.yaml 1 minilm "${batches[@]}" data.group_by_length=false data.packing=true
  run minilm-compiled single_gpu.yaml 1 minilm "${batches[@]}" data.group_by_length=true train.compile=true

  python3 -m pytest -q -m gpu tests > "$results/pytest-gpu.log" 2>&1
  echo "pytest -m gpu rc=$? (log: $results/pytest-gpu.log)"
fi

# real sizes: 40 optimizer steps of batches padded to 128 tokens, a small dev/test split for the end
# (data.max_length=128 too: the memory plan counts activations of max_length tokens, here every batch's)
real=(model.smoke_size=real data.max_length=128 data.pad_to_multiple_of=128 train.max_steps=40 train.log_every_steps=10
      train.eval_every_steps=0 train.save_every_steps=0 data.max_eval_examples=128 track.plots=false
      "data.cache_dir=$results/cache")
decoder=(train.micro_batch_size=8 train.global_batch_size=8 model.lora.r=16 model.gradient_checkpointing=true)
run real-distilbert single_gpu.yaml 1 distilbert "${real[@]}"
run real-gemma-lora single_gpu.yaml 1 gemma-lora "${real[@]}" "${decoder[@]}"
if [ "$gpus" -ge 2 ]; then
  run real-zero3-gemma-lora deepspeed_zero3.yaml 2 gemma-lora "${real[@]}" "${decoder[@]}"
fi
run real-mistral-qlora single_gpu.yaml 1 mistral-qlora "${real[@]}" "${decoder[@]}"
memory_gib=$(python3 -c "import torch; print(torch.cuda.get_device_properties(0).total_memory >> 30)")
if [ "$memory_gib" -ge 40 ]; then
  run real-mistral-lora single_gpu.yaml 1 mistral-lora "${real[@]}" "${decoder[@]}"
else
  echo "real-mistral-lora skipped: ${memory_gib} GiB on the card, 40 needed for the bf16 base" | tee -a "$results/skipped.txt"
fi

python3 - "$results" <<'PY'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
print(f"\n{'run':<22} {'type':<10} {'procs':>5} {'samples/s':>10} {'tokens/s':>9} {'step ms':>8} {'MFU':>6} "
      f"{'peak MiB/rank (reserved)':>26} {'plan MiB':>9} {'plan/res.':>9} {'dev f1':>7}")
for line in (root / "runs.txt").read_text().splitlines():
    name = line.split()[0]
    summary = root / name / "summary.json"
    if not summary.exists():
        print(f"{name:<22} FAILED ({line.split()[1]}): see {root / name}.log")
        continue
    s = json.loads(summary.read_text())
    perf = s["perf"]
    reserved = perf.get("peak_memory_reserved_bytes_per_rank") or [0] * len(perf["peak_memory_bytes_per_rank"])
    peaks = "/".join(f"{a >> 20}({r >> 20})" for a, r in zip(perf["peak_memory_bytes_per_rank"], reserved))
    mfu = f"{perf['mfu']:.1%}" if perf.get("mfu") is not None else "-"
    # the plan without CUDA's context (outside torch's allocator) against the most any rank reserved
    rows = perf.get("memory_plan") or {}
    planned = sum(v for k, v in rows.items() if k != "CUDA context")
    ratio = f"{planned / max(reserved):.2f}" if planned and max(reserved) else "-"
    print(f"{name:<22} {s['distributed_type']:<10} {s['num_processes']:>5} {perf['train_samples_per_s']:>10.1f} "
          f"{perf['train_tokens_per_s']:>9.0f} {1000 * (perf.get('step_seconds_median') or 0):>8.1f} {mfu:>6} "
          f"{peaks:>26} {planned >> 20:>9} {ratio:>9} {s['dev']['f1_micro']:>7.3f}")
PY
