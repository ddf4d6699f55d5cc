"""Where a training step's time goes: torch.profiler over emodist's own steps, grouped by kind of work.

    python bench/profile_step.py [--steps 20] [--warmup 5] [--examples 4096] [--set KEY=VALUE ...] [--record NAME]
    python bench/profile_step.py --variant gemma-lora --smoke        # any variant's smoke model

The run is the throughput bench's (bench/throughput.py) by default: `minilm` on a seeded subset of the
GoEmotions train split, length-grouped batches of 32, float32 unless --set says otherwise, one process. It is set up
as `launch/train.py` sets it up (emodist.train.lifecycle), then `--warmup` micro-batches run unprofiled and
`--steps` more run under torch.profiler through the loop's own `train_micro_batch`, with the data loader
inside the profile.

Printed: the steps' wall time and the GEMMs' FLOP/s while they ran; the operators' self CPU time grouped by kind (GEMMs, attention, LayerNorm,
GELU, dropout, the optimizer, gradient clipping, other elementwise work, ...), each as a share of the
wall time; what no operator accounts for (Python, the autograd engine, the loader's own Python); and the
top operators. `--record NAME` writes the same text into bench/RESULTS.md under NAME (e.g. `before`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from emodist.runtime import errors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
DEFAULT_DATA = Path(os.environ.get("EMODIST_GOEMOTIONS", ROOT.parent / "shared" / "data" / "goemotions"))

KINDS = (  # (kind, pattern on the operator's name): the first that matches names an operator's kind
    ("GEMM (linear layers)", r"^aten::(addmm|mm|bmm|matmul|linear|_addmm_activation)$|mkldnn.*(linear|matmul)"),
    ("attention", r"scaled_dot_product|flash_attention|_softmax|softmax"),
    ("LayerNorm", r"layer_norm"),
    ("GELU", r"gelu"),
    ("dropout", r"dropout|bernoulli"),
    ("optimizer (AdamW)", r"adam|Optimizer\.step"),
    ("gradient clipping", r"foreach_norm|_foreach_mul|clip_grad|linalg_vector_norm"),
    ("embedding", r"embedding"),
    ("loss", r"binary_cross_entropy|sigmoid"),
    ("zeroing and copies", r"^aten::(copy_|zero_|fill_|zeros|empty|empty_like|clone|contiguous|to|_to_copy|"
                           r"empty_strided|new_empty|ones_like|zeros_like|resize_)$"),
    ("other elementwise and reductions", r"^aten::"),
)


def kind_of(name: str) -> str:
    return next((kind for kind, pattern in KINDS if re.search(pattern, name)), "other operators")


def operator_times(profile) -> tuple[dict[str, float], float]:
    """(self CPU seconds of each operator over the profile, profiler annotations left out; the GEMMs' FLOP/s
    while they ran, from the profiler's FLOP counts)."""
    events = [e for e in profile.key_averages()
              if e.key.startswith(("aten::", "mkldnn::", "Optimizer.", "autograd::", "cpp_")) or "Backward" in e.key
              or "::" in e.key and not e.key.startswith("ProfilerStep")]
    gemms = [e for e in events if kind_of(e.key) == KINDS[0][0]]
    gemm_rate = sum(e.flops for e in gemms) / max(sum(e.self_cpu_time_total for e in gemms) / 1e6, 1e-9)
    return {e.key: e.self_cpu_time_total / 1e6 for e in events}, gemm_rate


def report(times: dict[str, float], wall: float, steps: int, gemm_rate: float, top: int = 15) -> str:
    kinds: dict[str, float] = {}
    for name, seconds in times.items():
        kinds[kind_of(name)] = kinds.get(kind_of(name), 0.0) + seconds
    accounted = sum(kinds.values())
    lines = [f"{steps} steps, {1000 * wall / steps:.1f} ms a step (profiled; the profiler adds its own overhead); "
             f"the GEMMs ran at {gemm_rate / 1e9:.1f} GFLOP/s (compare bench/roofline.py)", "",
             "| kind | ms a step | share of the step |", "|---|---:|---:|"]
    for kind, seconds in sorted(kinds.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {1000 * seconds / steps:.1f} | {seconds / wall:.1%} |")
    lines.append(f"| no operator (Python, autograd engine, loader) | {1000 * (wall - accounted) / steps:.1f} | "
                 f"{(wall - accounted) / wall:.1%} |")
    lines += ["", f"Top {top} operators by self CPU time:", "", "| operator | kind | ms a step | share |",
              "|---|---|---:|---:|"]
    for name, seconds in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| `{name}` | {kind_of(name)} | {1000 * seconds / steps:.2f} | {seconds / wall:.1%} |")
    return "\n".join(lines)


def run_config(args: argparse.Namespace, output_dir: str | None = None):
    """The profiled run's config (UsageError for an unknown variant or a bad --set, named as config.load names
    them); `output_dir` None: the run's default, which nothing creates (the check before any work)."""
    from emodist import config

    settings = [f"data.max_train_examples={args.examples}", "data.max_eval_examples=64", "train.epochs=1",
                "train.eval_every_steps=0", "train.save_every_steps=0", "track.wandb=off", "track.plots=false",
                "train.mixed_precision=no", *args.set]  # float32: `auto` is bf16 on CPUs with AVX512-BF16
    data = {} if args.smoke else {"data.data_dir": ("--data-dir", str(args.data_dir)),
                                  "data.dataset": ("--dataset", "goemotions")}
    return config.load(args.variant, None, settings, smoke=args.smoke,
                       cli={"output_dir": ("--output-dir", output_dir), **data})


def check(args: argparse.Namespace) -> None:
    """UsageError for a bad argument, before any work starts (no model, no temporary directory)."""
    import checks

    from emodist.config import variants

    checks.at_least(1, ("--steps", args.steps), ("--examples", args.examples))
    checks.at_least(0, ("--warmup", args.warmup))
    variants.get(args.variant)  # an unknown one: the ones there are, whether the data is there or not
    if not args.smoke:
        checks.goemotions(args.data_dir, ("train",))
    cfg = run_config(args)
    batches = -(-args.examples // cfg.train.micro_batch_size)
    needed = args.warmup + args.steps
    if batches < needed:
        raise errors.UsageError(
            f"--examples {args.examples}: makes {batches} micro-batches of {cfg.train.micro_batch_size}, fewer than "
            f"the {needed} that --warmup {args.warmup} and --steps {args.steps} need: use --examples "
            f"{needed * cfg.train.micro_batch_size} or more, or fewer --steps")


def next_batch(batches, args: argparse.Namespace) -> dict:
    """The next micro-batch of the epoch; UsageError when the data ran out (a data set smaller than --examples,
    or packed batches: fewer of them than --examples / micro_batch_size)."""
    batch = next(batches, None)
    if batch is None:
        raise errors.UsageError(f"--examples {args.examples}: the epoch ran out of micro-batches before --warmup "
                                f"{args.warmup} and --steps {args.steps} were done: use fewer --steps (or --warmup)")
    return batch


def profile(args) -> tuple[dict[str, float], float, float]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from emodist.runtime.signals import StopSignals
    from emodist.train import loop
    from emodist.train.lifecycle import Lifecycle

    with tempfile.TemporaryDirectory(prefix="emodist-profile-") as tmp:
        cfg = run_config(args, f"{tmp}/run")
        with StopSignals(training=False) as stop, Lifecycle(cfg, stop) as life:
            life.setup()
            s = life.session
            s.model.train()
            batches = loop.epoch_batches(s)
            for _ in range(args.warmup):
                loop.train_micro_batch(s, next_batch(batches, args))
            with torch_profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
                started = time.perf_counter()
                for _ in range(args.steps):
                    loop.train_micro_batch(s, next_batch(batches, args))
                float(s.loss_sum)  # the steps have finished
                wall = time.perf_counter() - started
    return *operator_times(prof), wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="minilm", help="which variant (default minilm)")
    parser.add_argument("--smoke", action="store_true", help="its tiny smoke model and synthetic data")
    parser.add_argument("--steps", type=int, default=20, help="profiled micro-batches (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="unprofiled micro-batches first (default 5)")
    parser.add_argument("--examples", type=int, default=4096, help="train examples the batches come from")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="GoEmotions in its original layout")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an emodist setting")
    parser.add_argument("--record", metavar="NAME", help="write the profile into bench/RESULTS.md as NAME")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return errors.run_main(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    check(args)
    from emodist.runtime import process

    process.before_torch()
    times, gemm_rate, wall = profile(args)
    text = report(times, wall, args.steps, gemm_rate)
    print(text)
    if args.record:
        from results import entry, record

        command = (f"python bench/profile_step.py --variant {args.variant}{' --smoke' if args.smoke else ''} --steps "
                   f"{args.steps} --warmup {args.warmup}" + "".join(f" --set={o}" for o in args.set))
        record(f"profile-{args.variant}-{args.record}",
               entry(f"Profile of a {args.variant} training step: {args.record}", command, text),
               heading="## Where a training step's time goes (torch.profiler)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
