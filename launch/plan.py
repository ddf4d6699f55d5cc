"""Will this run fit? Its memory per process, planned from the model's shapes: no weights, no network.

    python launch/plan.py --variant mistral-qlora --gpu-memory 12GB
    python launch/plan.py --variant mistral-lora --config_file accelerate_configs/deepspeed_zero3.yaml \\
        --num_processes 4 --gpu-memory 24GB
    python launch/plan.py --variant gemma-lora train.micro_batch_size=4 --json

The arguments of launch/train.py (--variant, --config, --smoke, key=value overrides), accelerate's
--config_file, --num_processes and --num_machines, and the memory to fit in: --gpu-memory (default: this
machine's GPU, else its RAM, planned for the CPU). Prints the plan per process, a verdict, and when it does
not fit, what to change. The model is planned as emodist/models/memory.py says. Exit codes: 0 planned
(whether it fits or not: see the verdict, or "fits" in --json), 2 refused (one line says why).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from emodist import config
from emodist.runtime import errors, process


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", help="preset to start from (python launch/train.py --list-variants)")
    parser.add_argument("--config", help="YAML file of settings (e.g. a run's config.yaml)")
    parser.add_argument("--smoke", action="store_true", help="plan the --smoke run (model.smoke_size decides its size)")
    parser.add_argument("--config_file", "--config-file", dest="config_file",
                        help="accelerate config file of the launch (default: one process)")
    parser.add_argument("--num_processes", "--num-processes", dest="num_processes", type=int,
                        help="processes in all (overrides the config file's)")
    parser.add_argument("--num_machines", "--num-machines", dest="num_machines", type=int,
                        help="nodes (overrides the config file's)")
    parser.add_argument("--gpu-memory", metavar="SIZE", help="memory of one GPU, e.g. 24GB or 80GiB (plans for a GPU)")
    parser.add_argument("--labels", type=int, default=None, help="labels of the head (default: the data set's)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings, e.g. train.micro_batch_size=2")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    process.before_torch()
    args = parse_args(argv)
    return errors.run_main(lambda: plan(args))


def plan(args: argparse.Namespace) -> int:
    if args.labels is not None and not 1 <= args.labels <= 10**6:  # 10**8 ran out of memory building id2label
        raise errors.UsageError(f"--labels {args.labels}: a head of 1 to 1,000,000 labels is planned")
    # with --labels given, the data is not read: a finished run's config.yaml plans with its data moved away
    cfg = config.load(args.variant, args.config, args.overrides, smoke=args.smoke, data_here=args.labels is None)
    process.quiet_libraries()
    from emodist.models import memory, placement
    from emodist.report import memory_table
    from emodist.train import distributed

    target = placement.Target.of(args.gpu_memory)
    where = placement.from_accelerate_config(args.config_file, args.num_processes, args.num_machines, target.device)
    where = dataclasses.replace(where, precision=placement.precision_for(cfg, where.device, where.zero_stage))
    distributed.check_support(cfg, distributed.Topology.planned(where, args.config_file))  # what training refuses
    labels = args.labels or memory.label_count(cfg)
    planned = memory.plan(cfg, where, labels)
    fits = target.fits(planned)
    advice = [] if fits else memory.advice(cfg, where, labels, target, planned.shapes)
    if args.json:
        print(json.dumps({**planned.to_json(), "target": target.to_json(), "fits": fits, "advice": advice}, indent=2))
    else:
        memory_table.show(planned, target, advice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
