"""What the user sees in the terminal: a start banner, progress, log lines and the final tables.

    console = Console(enabled=accelerator.is_main_process)

Only the main process prints. On a terminal the progress is a live rich bar; when stdout is a file or a
pipe (CI, SLURM output) the same information comes as plain log lines, one per logged step.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from rich.console import Console as RichConsole
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from emodist.metrics import HEADLINE


class Console:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.rich = RichConsole(highlight=False)
        self._progress: Progress | None = None

    def print(self, *objects) -> None:
        if self.enabled:  # a line of text stays one line (paths included), however narrow the log
            self.rich.print(*objects, soft_wrap=all(isinstance(o, str) for o in objects))

    @staticmethod
    def quiet_libraries() -> None:
        """Silence the libraries' own progress bars and load reports: the banner says what was loaded."""
        import datasets
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        datasets.disable_progress_bars()
        # peft still calls transformers' v6-deprecated names; nothing a user of emodist can act on
        warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)
        # DeepSpeed's collectives call torch names torch deprecates, once per call
        warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)

    def banner(self, title: str, rows: list[tuple[str, str]]) -> None:
        table = Table(title=title, show_header=False, title_justify="left", title_style="bold")
        table.add_column(style="bold cyan")
        table.add_column()
        for key, value in rows:
            table.add_row(key, value)
        self.print(table)

    @contextmanager
    def progress(self, total_steps: int, completed: int = 0):
        """A live progress bar over optimizer steps (only on a terminal); `advance()` moves it."""
        if not (self.enabled and self.rich.is_terminal):
            yield self
            return
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.rich,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=completed, info="")
        with self._progress:
            yield self
        self._progress = None

    def advance(self, step: int, info: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)

    def log(self, record: dict) -> None:
        """One plain line for a metrics record (train or eval)."""
        parts = [f"step {record['step']}"]
        for key, value in record.items():
            if key == "step":
                continue
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        if self.enabled:
            self.rich.print("  ".join(parts), soft_wrap=True)  # one record, one line, even in a narrow log

    def final(self, summary: dict) -> None:
        """The end-of-run tables: headline metrics per split, per-label scores, throughput and memory."""
        splits = [s for s in ("dev", "test") if s in summary]
        scores = Table(title="Results", title_justify="left", title_style="bold")
        scores.add_column("metric")
        for split in splits:
            scores.add_column(f"{split} ({summary[split]['num_examples']} ex.)", justify="right")
        for metric in (*HEADLINE, "loss"):
            scores.add_row(metric, *(f"{summary[s][metric]:.4f}" for s in splits))
        self.print(scores)

        split = splits[-1]  # test when there is one
        per_label = Table(title=f"Per label ({split}), best F1 first", title_justify="left", title_style="bold")
        for column in ("label", "F1", "precision", "recall", "support"):
            per_label.add_column(column, justify="left" if column == "label" else "right")
        for name, label in sorted(summary[split]["per_label"].items(), key=lambda item: -item[1]["f1"]):
            per_label.add_row(name, f"{label['f1']:.4f}", f"{label['precision']:.4f}", f"{label['recall']:.4f}",
                              str(label["support"]))
        self.print(per_label)

        perf = summary["perf"]
        run = Table(title="Throughput and memory", title_justify="left", title_style="bold", show_header=False)
        run.add_column(style="bold cyan")
        run.add_column(justify="right")
        run.add_row("train time", f"{perf['train_seconds']:.1f} s")
        run.add_row("samples/s", f"{perf['train_samples_per_s']:.1f}")
        run.add_row("tokens/s (real)", f"{perf['train_tokens_per_s']:.0f}")
        run.add_row("tokens/s (padded)", f"{perf['train_padded_tokens_per_s']:.0f}")
        for rank, peak in enumerate(perf["peak_memory_bytes_per_rank"]):
            run.add_row(f"peak memory rank {rank}", f"{peak / 2**20:.0f} MiB")
        self.print(run)
