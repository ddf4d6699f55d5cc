"""What a run tells its user: the terminal (`console`), metrics.jsonl and wandb (`tracking`), throughput,
memory and MFU (`telemetry`), plots (`plots`), the comparison across runs (`compare`) and the memory plan's
table (`memory_table`).

Imports `emodist.models` (the memory plan's types), `emodist.scoring`, `emodist.config` and `emodist.runtime`; reads run directories through the files
they hold (summary.json, metrics.jsonl), not through the training code.
"""
