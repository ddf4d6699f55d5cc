"""One metric-logger interface: every record goes to metrics.jsonl and to the console.

    logger = MetricLogger(run_dir / "metrics.jsonl", console, enabled=accelerator.is_main_process)
    logger.log({"step": 10, "epoch": 0, "train/loss": 0.31, ...})

Keys are namespaced (`train/`, `eval/`, `perf/`). On every process but the main one the logger does
nothing, so the loop calls it unconditionally.
"""

from __future__ import annotations

import json
from pathlib import Path

from emodist.console import Console


class MetricLogger:
    def __init__(self, path: Path, console: Console, enabled: bool):
        self.enabled = enabled
        self.console = console
        self._file = path.open("a", encoding="utf-8") if enabled else None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # a killed run keeps every line it logged
        self.console.log(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
