"""A training run from its config: the Accelerator, the data, the run directory, the model and its tokens,
then the run's life (`lifecycle.train`). launch/train.py calls it once the hub decision is made: importing
this module imports torch, accelerate and the HF libraries.
"""

from __future__ import annotations

from emodist import data, models
from emodist.config import RunConfig
from emodist.report import telemetry
from emodist.report.console import Console
from emodist.rundir import contract
from emodist.runtime import process
from emodist.runtime.signals import StopSignals
from emodist.train import distributed, lifecycle
from emodist.train.accelerator import check_data_fits, make_accelerator


def start(cfg: RunConfig, overwrite: bool, resume: str, opened: dict, stop: StopSignals) -> int:
    """Train the run `cfg` describes (exit code 0; a finished run has nothing to do). `opened` receives the
    accelerator and the run directory as they open, for the entry script to close whatever happens."""
    process.quiet_libraries()
    phases = telemetry.Phases()
    with phases.measure("load"):
        accelerator = opened["accelerator"] = make_accelerator(cfg)
        process.for_training(accelerator.device.type, cfg.train.seed, cfg.train.cpu_threads)
        console = Console(accelerator.is_main_process)
        topology = distributed.Topology.of(accelerator)
        dataset = data.load(cfg.data, seed=cfg.train.seed)
        check_data_fits(cfg, dataset, accelerator)
        run = opened["run"] = contract.open_run(cfg, accelerator, dataset.labels, topology.identity(), overwrite,
                                                resume, notify=console.print)
        if run.finished:
            console.print(f"emodist: {run.path} has already finished (summary.json): nothing to do. Train it further "
                          "with more train.epochs or train.max_steps, or start again with --overwrite")
            return 0
        source = models.base_path(cfg.model)
        if cfg.smoke:
            with accelerator.main_process_first():
                texts = dataset.splits["train"].texts
                source = str(models.make_smoke_base(cfg.model.architecture, texts,
                                                    models.smoke_base_dir(cfg, run.path, texts),
                                                    seed=cfg.train.seed, size=cfg.model.smoke_size))
        built = models.build_model(cfg.model, dataset.labels, source, accelerator.device,
                                   deepspeed_stage=topology.zero_stage,
                                   quant_storage=distributed.quant_storage_dtype(cfg, topology))
    with phases.measure("tokenize"):
        tokenized = data.tokenize(dataset, built.tokenizer, cfg.data.max_length, cfg.data.cache_dir, accelerator)
    lifecycle.train(cfg, accelerator, built, dataset, tokenized, run, console, phases=phases, stop=stop)
    return 0
