"""This machine's matrix-multiplication limit at a variant's own GEMM shapes: the CPU's peak for MFU.

    python bench/roofline.py [--variant minilm] [--tokens 640] [--rows 32] [--threads N] [--record]

The shapes are the variant's linear layers (built on the meta device: no weights are read) for one
micro-batch of `--tokens` token rows (the throughput bench's mean: 32 GoEmotions texts of ~20 tokens) and
`--rows` texts for the head: each layer's forward product, its input gradient and, for trained weights,
its weight gradient (emodist.report.roofline; LoRA adapters are left out here, a run counts them). Each
shape is timed with torch.mm, best of three, in float32 and, where the CPU multiplies bf16 natively
(AVX512-BF16 or AMX), in bfloat16. The last line of each dtype is the FLOP-weighted rate over the shapes:
the peak a training run on this machine compares its model FLOP/s with (a run measures it the same way,
for its own micro-batch, and reports `perf.mfu` against it). A large square GEMM is shown for reference:
the BLAS's best case, which a model's small GEMMs do not reach.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def variant_gemms(variant: str, tokens: int, rows: int, smoke: bool):
    from emodist import config
    from emodist.models import base_path
    from emodist.models.shapes import model_shapes
    from emodist.report import roofline

    cfg = config.load(variant, None, [], smoke=smoke)
    head = cfg.model.head_modules
    source = None if smoke else base_path(cfg.model)
    shapes = model_shapes(cfg, 28, source)
    full = cfg.model.method == "full"
    linears = [(name, fan_in, fan_out, full or any(part in head for part in name.split(".")))
               for name, fan_in, fan_out in shapes.linears]
    return roofline.gemms_of(linears, tokens, rows, head)


def measure(gemms, dtypes) -> tuple[str, dict]:
    import torch

    from emodist.report import roofline

    lines = ["| m | n | k | per micro-batch | GFLOP share | " + " | ".join(f"{d} GFLOP/s" for d in dtypes) + " |",
             "|---:|---:|---:|---:|---:|" + "---:|" * len(dtypes)]
    total = sum(g.flops for g in gemms)
    seconds = dict.fromkeys(dtypes, 0.0)
    for g in gemms:
        rates = []
        for name in dtypes:
            rate, measured = roofline.shape_rate(g, getattr(torch, name))
            seconds[name] += g.flops / rate
            rates.append(f"{rate / 1e9:.1f}" + ("" if measured == roofline.Gemm(g.m, g.n, g.k) else
                                                 f" (at m={measured.m})"))
        lines.append(f"| {g.m} | {g.n} | {g.k} | {g.count} | {g.flops / total:.1%} | " + " | ".join(rates) + " |")
    weighted = {name: total / seconds[name] for name in dtypes}
    lines.append("| **FLOP-weighted** | | | | 100% | "
                 + " | ".join(f"**{weighted[name] / 1e9:.1f}**" for name in dtypes) + " |")
    square = roofline.Gemm(2048, 2048, 2048)
    lines.append("| 2048 (reference) | 2048 | 2048 | | | " + " | ".join(
        f"{roofline.shape_rate(square, getattr(torch, name))[0] / 1e9:.1f}" for name in dtypes) + " |")
    return "\n".join(lines), weighted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="minilm", help="whose shapes (default minilm)")
    parser.add_argument("--smoke", action="store_true", help="the variant's tiny smoke shapes")
    parser.add_argument("--tokens", type=int, default=640, help="token rows of one micro-batch (default 640)")
    parser.add_argument("--rows", type=int, default=32, help="texts of one micro-batch (default 32)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--record", action="store_true", help="write the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from emodist.runtime import errors

    return errors.run_main(lambda: run(args))


def check(args: argparse.Namespace) -> None:
    """UsageError for a bad argument, before torch is imported."""
    import checks

    from emodist import config

    checks.at_least(1, ("--tokens", args.tokens), ("--rows", args.rows), ("--threads", args.threads))
    config.load(args.variant, None, [], smoke=args.smoke)  # an unknown variant: the ones there are


def run(args: argparse.Namespace) -> int:
    check(args)
    from emodist.runtime import process

    process.before_torch()
    import torch

    torch.set_num_threads(args.threads)
    dtypes = ["float32", *(["bfloat16"] if process.cpu_has_native_bf16() else [])]
    gemms = variant_gemms(args.variant, args.tokens, args.rows, args.smoke)
    text, weighted = measure(gemms, dtypes)
    summary = "; ".join(f"{name} {rate / 1e9:.1f} GFLOP/s" for name, rate in weighted.items())
    print(text)
    print(f"roofline: {args.variant}, {args.tokens} tokens x {args.rows} texts, {args.threads} threads: {summary}")
    if args.record:
        from results import entry, record

        command = (f"python bench/roofline.py --variant {args.variant}{' --smoke' if args.smoke else ''} "
                   f"--tokens {args.tokens} --rows {args.rows} --threads {args.threads}")
        record(f"roofline-{args.variant}", entry(f"GEMM roofline at {args.variant}'s shapes", command, text,
                                                 f"FLOP-weighted: {summary}"),
               heading="## This machine's matrix-multiplication limit (bench/roofline.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
