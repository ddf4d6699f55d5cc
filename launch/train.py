"""Train one variant end to end and write its run directory.

    accelerate launch launch/train.py --variant gemma-lora [--smoke] [--config FILE.yaml] [key=value ...]
    accelerate launch launch/train.py ... --output-dir runs/x --resume auto     # continue a stopped run
    python launch/train.py --list-variants | --list-keys

Parse -> config -> hub decision -> setup -> fit -> finish -> close (emodist/train/lifecycle.py); the logic
lives in `emodist/`. Exit codes (emodist/runtime/errors.py): 0 done, 2 refused (one line says why), 3 the loss
diverged, 65 a data file that cannot be read (its file and line named), 70 internal error (the traceback goes
to a file), 74 disk full, 75 stopped by a signal after saving a checkpoint, 130 Ctrl-C before training; a
launcher such as torchrun reports any failure as 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from emodist import config  # light: no torch or HF imports yet
from emodist.config import variants
from emodist.runtime import errors, hub, process, signals


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # no abbreviations: `--output` after a wrapper's own --output-dir (slurm/launch.sh) would silently win
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--variant", help=f"preset to start from: {', '.join(variants.names())}")
    parser.add_argument("--config", help="YAML file of settings (e.g. a run's config.yaml)")
    parser.add_argument("--output-dir", help="run directory (default: runs/<variant>-<date>-<time>, "
                        "runs/smoke-<variant>-... with --smoke)")
    parser.add_argument("--data-dir", help="local data directory; its format is detected from the files")
    parser.add_argument("--dataset", help="data set format or name (sets data.dataset)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model + synthetic data: offline check")
    parser.add_argument("--wandb", choices=("online", "offline", "off"),
                        help="wandb tracking (sets track.wandb; default auto: WANDB_MODE, else online with an API "
                             "key, else offline)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")
    parser.add_argument("--resume", default="none", metavar="auto|PATH|none",
                        help="continue from a checkpoint: auto = the newest complete one in --output-dir "
                             "(a fresh start if there is none), PATH = a checkpoints/step-N directory")
    parser.add_argument("--list-variants", action="store_true", help="show the variants and exit")
    parser.add_argument("--list-keys", action="store_true", help="show every config key and exit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings, e.g. optim.lr=2e-4")
    return parser.parse_intermixed_args(argv)  # KEY=VALUE may come before or after the flags


def main(argv: list[str] | None = None) -> int:
    process.before_torch()  # OpenMP's idle threads must not stall the steps of a busy machine
    args = parse_args(argv)
    if args.list_variants or args.list_keys:
        return print_listing(args.list_variants)
    lives: list = []  # the run's lifecycle once it exists: an internal error's traceback goes to its run directory
    return errors.run_main(lambda: train(args, lives), traceback_dir=lambda: lives[0].run_dir if lives else None,
                           interrupted="interrupted (Ctrl-C) before training started; nothing was saved")


def train(args: argparse.Namespace, lives: list) -> int:
    # a scheduler's signal while the model loads stops the run after its first step (emodist/runtime/signals.py)
    with signals.StopSignals(training=False) as stop:
        cli = {"output_dir": ("--output-dir", args.output_dir), "data.data_dir": ("--data-dir", args.data_dir),
               "data.dataset": ("--dataset", args.dataset or ("auto" if args.data_dir else None)),
               "track.wandb": ("--wandb", args.wandb)}
        cfg = config.load(args.variant, args.config, args.overrides, smoke=args.smoke, cli=cli)
        if hub.needed(cfg) and hub.go_offline_if_unreachable() and errors.is_global_main_process():
            print("emodist: the HuggingFace hub is unreachable: working offline (local cache only)", file=sys.stderr)
        # torch, accelerate and the HF libraries are imported only now, after the offline decision
        from emodist.train.lifecycle import Lifecycle

        with Lifecycle(cfg, stop) as life:  # its close() runs whatever happens, before an error is reported
            lives.append(life)
            if life.setup(args.overwrite, args.resume):
                life.fit()
                life.finish()
        return 0


def print_listing(show_variants: bool) -> int:
    if show_variants:
        lines = [f"{v.name:<15} {v.base_model:<40} {v.description}" for v in variants.VARIANTS.values()]
    else:
        lines = [f"{key:<30} {type_name:<28} {doc}" for key, (type_name, doc) in config.field_docs().items()]
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # read by `| head`, which stopped reading: what it showed is what was asked for
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not fail
    return 0


if __name__ == "__main__":
    sys.exit(main())
