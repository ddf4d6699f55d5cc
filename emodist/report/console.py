"""What the user sees in the terminal: a start banner, progress, log lines and the final tables.

    console = Console(enabled=accelerator.is_main_process)

Only the main process prints. On a terminal the progress is a live rich bar (step, epoch, loss, lr,
samples/s, tokens/s, current/peak memory, elapsed, ETA); when stdout is a file or a pipe (CI, SLURM output)
the same fields come as one plain line per logged step:

    step 40/512 (7%)  epoch 0.08  loss 0.5903  lr 4.98e-04  61.3 samples/s  1,873 tokens/s  mem 612/640 MiB (peak)  ETA 0:01:52
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

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

from emodist.runtime.errors import NO_SPACE_ERRNOS
from emodist.scoring.metrics import HEADLINE


@dataclass
class _Plan:
    total: int
    completed: int
    """Steps done before this process started (a resumed run): the ETA counts only this process's pace."""
    started: float


def _train_fields(record: dict) -> list[str]:
    """epoch, loss, lr, throughput and memory of a train record, as short `name value` fields."""
    fields = [f"epoch {record['epoch']:.2f}", f"loss {record['train/loss']:.4f}", f"lr {record['train/lr']:.2e}"]
    if "perf/train_samples_per_s" in record:
        fields.append(f"{record['perf/train_samples_per_s']:.1f} samples/s")
    if "perf/train_tokens_per_s" in record:
        fields.append(f"{record['perf/train_tokens_per_s']:,.0f} tokens/s")
    if "perf/memory_bytes" in record:
        fields.append(f"mem {record['perf/memory_bytes'] / 2**20:,.0f}/{record['perf/peak_memory_bytes'] / 2**20:,.0f} "
                      "MiB (peak)")
    return fields


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Terminal(RichConsole):
    """rich's Console, but a reader of standard output that goes away (`| head`, a `tee` ended by a hangup, a
    terminal hung up: EIO) no longer ends the process: rich's own answer is exit 1, no line, and no checkpoint of the steps since
    the last one. What would be printed is dropped, one warning goes to stderr, the run goes on."""

    def __init__(self, *args, then: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.then = then
        """What the warning says goes on once standard output is dropped."""

    def _check_buffer(self) -> None:
        try:
            super()._check_buffer()
        except OSError as err:  # EIO: the terminal hung up (the SIGHUP's own handler may come after this write)
            if err.errno in (*NO_SPACE_ERRNOS, errno.EFBIG):  # `> log` on a full disk: the run's own disk may have room to spare
                self._drop_stdout("standard output's file cannot grow (its disk is full or over quota)")
            elif err.errno == errno.EIO:
                self.on_broken_pipe()
            else:
                raise

    def on_broken_pipe(self) -> None:
        self._drop_stdout("standard output is gone (the program that read it ended)")

    def _drop_stdout(self, why: str) -> None:
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # print() and the exit's flush too
        with contextlib.suppress(OSError):
            sys.stderr.write(f"emodist: warning: {why}: {self.then}\n")


RUN_GOES_ON = "the run goes on without printing; metrics.jsonl holds every record"


def terminal(then: str = RUN_GOES_ON) -> _Terminal:
    """The console standard output is printed through; `then`: what the warning says goes on once standard output
    is gone. COLUMNS under 20 (a container reports 0 for a terminal it has not sized) cut every line rich prints to
    nothing, or to a character: it prints 80 columns then."""
    columns = os.environ.get("COLUMNS", "").strip()
    return _Terminal(highlight=False, width=80 if columns.isdigit() and int(columns) < 20 else None, then=then)


class Console:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.rich = terminal()
        self._progress: Progress | None = None
        self._plan: _Plan | None = None

    def print(self, *objects) -> None:
        if self.enabled:  # a line of text stays one line (paths included), however narrow the log
            self.rich.print(*objects, soft_wrap=all(isinstance(o, str) for o in objects))

    def banner(self, title: str, rows: list[tuple[str, str]]) -> None:
        table = Table(title=title, show_header=False, title_justify="left", title_style="bold")
        table.add_column(style="bold cyan")
        table.add_column()
        for key, value in rows:
            table.add_row(key, value)
        self.print(table)

    @contextmanager
    def progress(self, total_steps: int, completed: int = 0):
        """Progress over optimizer steps: a live rich bar on a terminal, else one plain line per logged
        train record (`log`). `advance()` moves the bar each step."""
        self._plan = _Plan(total_steps, completed, time.monotonic())
        if not (self.enabled and self.rich.is_terminal):
            yield self
            return
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.rich,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=completed, info="")
        try:
            with self._progress:
                yield self
        finally:
            self._progress = None

    def advance(self, step: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def log(self, record: dict) -> None:
        """A metrics record: a train record updates the live bar (terminal) or prints one progress line with
        its ETA (log file); any other record (evaluation) prints one line."""
        if not self.enabled:
            return
        if "train/loss" in record and self._plan is not None:
            fields = _train_fields(record)
            if self._progress is not None:
                self._progress.update(self._task, completed=record["step"], info="  ".join(fields))
                return
            plan = self._plan
            done = record["step"] - plan.completed
            eta = (time.monotonic() - plan.started) / done * (plan.total - record["step"]) if done > 0 else None
            line = [f"step {record['step']}/{plan.total} ({100 * record['step'] // max(plan.total, 1)}%)", *fields,
                    f"ETA {_clock(eta)}"]
        else:
            line = [f"step {record['step']}"] + [
                f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                for key, value in record.items() if key != "step"]
        self.rich.print("  ".join(line), soft_wrap=True)  # one record, one line, even in a narrow log

    def final(self, summary: dict) -> None:
        """The end-of-run tables: headline metrics per split, per-label scores, throughput and memory."""
        splits = [s for s in ("dev", "test", "dev_tuned", "test_tuned") if s in summary]
        names = {"dev": "dev", "test": "test", "dev_tuned": "dev, tuned", "test_tuned": "test, tuned"}
        objective = (summary.get("thresholds") or {}).get("objective")
        scores = Table(title="Results" + (f" (thresholds tuned on dev for {objective})" if objective else ""),
                       title_justify="left", title_style="bold")
        scores.add_column("metric")
        for split in splits:
            scores.add_column(f"{names[split]} ({summary[split]['num_examples']} ex.)", justify="right")
        for metric in (*HEADLINE, "loss"):
            scores.add_row(metric, *(f"{summary[s][metric]:.4f}" for s in splits))
        self.print(scores)

        split = splits[-1]  # the test split, at the tuned thresholds when there are some
        cut = (summary.get("thresholds") or {}).get("per_label", {}) if split == "test_tuned" else {}
        where = "test, tuned thresholds" if split == "test_tuned" else split
        per_label = Table(title=f"Per label ({where}), best F1 first", title_justify="left", title_style="bold")
        for column in ("label", "F1", "precision", "recall", "support", *(("threshold",) if cut else ())):
            per_label.add_column(column, justify="left" if column == "label" else "right")
        for name, label in sorted(summary[split]["per_label"].items(), key=lambda item: -item[1]["f1"]):
            per_label.add_row(name, f"{label['f1']:.4f}", f"{label['precision']:.4f}", f"{label['recall']:.4f}",
                              str(label["support"]), *((f"{cut[name]:.4g}",) if cut else ()))
        self.print(per_label)

        perf = summary["perf"]
        run = Table(title="Throughput and memory", title_justify="left", title_style="bold", show_header=False)
        run.add_column(style="bold cyan")
        run.add_column(justify="right")
        sessions = perf.get("sessions") or 1
        for phase, seconds in (perf.get("phase_seconds") or {"train": perf["train_seconds"]}).items():
            run.add_row(f"time: {phase}" + (" (this session)" if sessions > 1 else ""), f"{seconds:.1f} s")
        if sessions > 1:
            run.add_row("sessions", f"{sessions} (resumed {sessions - 1}x): {perf['train_seconds']:.1f} s of training "
                                    "in all; samples/s and tokens/s cover every session")
        if perf.get("step_seconds_median") is not None:
            run.add_row("step time", f"median {perf['step_seconds_median'] * 1000:.0f} ms, "
                                     f"p90 {perf['step_seconds_p90'] * 1000:.0f} ms")
        run.add_row("samples/s", f"{perf['train_samples_per_s']:.1f}")
        run.add_row("tokens/s", f"{perf['train_tokens_per_s']:,.0f} real, {perf['train_padded_tokens_per_s']:,.0f} "
                                f"padded (padding efficiency {perf.get('padding_efficiency', 0):.0%})")
        if perf.get("train_tflops_per_s") is not None:
            mfu = (f" (MFU {perf['mfu']:.1%} of {perf['peak_tflops_per_s']:.3g}: {perf['peak_source']})"
                   if perf.get("mfu") is not None else "")
            run.add_row("model TFLOP/s", f"{perf['train_tflops_per_s']:.3g}{mfu}")
        kind = {"cuda_allocated": "CUDA allocated", "cpu_rss": "peak RSS"}.get(perf.get("memory_kind"), "peak")
        reserved = perf.get("peak_memory_reserved_bytes_per_rank") or []
        for rank, peak in enumerate(perf["peak_memory_bytes_per_rank"]):
            extra = f", {reserved[rank] / 2**20:,.0f} MiB reserved" if rank < len(reserved) else ""
            run.add_row(f"peak memory rank {rank}", f"{peak / 2**20:,.0f} MiB {kind}{extra}")
        planned, steps = perf.get("planned_peak_bytes"), perf.get("training_peak_memory_bytes")
        if planned and steps:
            run.add_row("memory plan", f"{planned / 2**20:,.0f} MiB: {planned / steps:.2f} of the steps' peak")
        self.print(run)
