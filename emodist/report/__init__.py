"""What a run tells its user: the terminal (`console`), metrics.jsonl and wandb (`tracking`), throughput,
memory and MFU (`telemetry`), plots (`plots`) and the comparison across runs (`compare`).

Imports `emodist.scoring`, `emodist.config` and `emodist.runtime`; reads run directories through the files
they hold (summary.json, metrics.jsonl), not through the training code.
"""
