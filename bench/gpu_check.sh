#!/usr/bin/env bash
# The prepared GPU check: everything that needs CUDA, in one script for one call on a lent GPU machine.
#
#   bench/gpu_check.sh [RESULTS_DIR]        (default: $OUT when set, else runs/gpu-check)
#
# 1. every variant --smoke on one GPU (accelerate_configs/single_gpu.yaml): the real CUDA paths of
#    bf16 autocast, 4-bit NF4 (bitsandbytes CUDA kernels) and paged 8-bit AdamW;
# 2. mistral-lora --smoke under FSDP2 (fsdp.yaml) and DeepSpeed ZeRO-3 (deepspeed_zero3.yaml) on every
#    visible GPU, and mistral-qlora under ZeRO-2 and ZeRO-3 (4-bit storage in bf16);
# 3. the tests marked `gpu` (pytest -m gpu).
# It ends with one table (samples/s, tokens/s, median step, MFU, peak memory per rank, dev F1) read from each
# summary.json (smoke models are tiny: their MFU says nothing of the real models'):
# copy it, with the card's name, into bench/RESULTS.md.
#
# Python packages the GPU image may lack (deepspeed, bitsandbytes, datasets, ...) are installed from
# wheels/ when that folder exists (pip download them on a machine with PyPI access and carry the folder).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 3
results=${1:-${OUT:-runs/gpu-check}}
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

for variant in distilbert gemma-lora mistral-lora mistral-qlora minilm; do
  run "$variant" single_gpu.yaml 1 "$variant"
done
run fsdp-mistral-lora fsdp.yaml "$gpus" mistral-lora
run zero3-mistral-lora deepspeed_zero3.yaml "$gpus" mistral-lora
run zero2-mistral-qlora deepspeed_zero2.yaml "$gpus" mistral-qlora
run zero3-mistral-qlora deepspeed_zero3.yaml "$gpus" mistral-qlora

python3 -m pytest -q -m gpu tests > "$results/pytest-gpu.log" 2>&1
echo "pytest -m gpu rc=$? (log: $results/pytest-gpu.log)"

python3 - "$results" <<'PY'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
print(f"\n{'run':<22} {'type':<10} {'procs':>5} {'samples/s':>10} {'tokens/s':>9} {'step ms':>8} {'MFU':>6} "
      f"{'peak MiB/rank (reserved)':>26} {'dev f1':>7}")
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
    print(f"{name:<22} {s['distributed_type']:<10} {s['num_processes']:>5} {perf['train_samples_per_s']:>10.1f} "
          f"{perf['train_tokens_per_s']:>9.0f} {1000 * (perf.get('step_seconds_median') or 0):>8.1f} {mfu:>6} "
          f"{peaks:>26} {s['dev']['f1_micro']:>7.3f}")
PY
