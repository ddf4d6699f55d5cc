"""One metric-logger interface: every record goes to metrics.jsonl, the console and (when on) wandb.

    tracker = start_wandb(cfg, run_dir, labels, topology, console) if main process else Tracker()
    logger = MetricLogger(run_dir / "metrics.jsonl", console, enabled=accelerator.is_main_process, tracker=tracker)
    logger.log({"step": 10, "epoch": 0.02, "train/loss": 0.31, ...})
    logger.close(summary, exit_code=0)

Keys are namespaced (`train/`, `eval/` for dev, `test/`, `perf/`). On every process but the main one the
logger does nothing, so the loop calls it unconditionally. metrics.jsonl is written first and flushed: a
tracker that fails (network, disk) costs a warning, never a logged line.

wandb: project, group (the study), job_type (the variant), name (variant + SLURM job id, or the start
time), tags and the resolved config; every record is logged against its optimizer `step`, so a resumed
run may log a step twice without wandb dropping it. At the end the summary holds the final dev (`eval/`)
and test metrics, per-label F1 and the `perf/` totals, and the run's files hold summary.json and
metrics.jsonl, which `download_wandb_group` reads back for `launch/compare.py --wandb-group`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from emodist.report.console import Console
from emodist.report.wandb_access import has_credentials, resolve_mode, wandb_server
from emodist.runtime.errors import UsageError
from emodist.runtime.hub import reachable
from emodist.scoring.metrics import HEADLINE

RUN_FILE = "emodist-run.json"
"""In <run dir>/wandb/: the wandb run's id and name, so that a resumed run continues the same wandb run."""


class Tracker:
    """The do-nothing tracker (tracking off, or not the main process); `WandbTracker` is the real one."""

    def log(self, record: dict) -> None:
        pass

    def finish(self, summary: dict | None, files: list[Path], exit_code: int) -> None:
        pass


class WandbTracker(Tracker):
    """wandb calls run on a thread of their own, so the training loop never waits for wandb's service.

    That service is a separate process: a job's SIGTERM (SLURM signals every process of a job step) stops
    it mid-run, and it dies without writing what it had buffered. Calls go in order to one daemon thread;
    the first failure turns them off. `finish` then starts a new service for the same wandb run and logs
    again what the dead one may have lost (every record in offline mode, whose file the dead service left
    incomplete; online, the records from the last step the server holds), then the summary and files. It
    waits at most `FINISH_TIMEOUT` seconds (`STOP_TIMEOUT` when the run was stopped: launchers kill 30 s
    after their SIGTERM); metrics.jsonl holds every record whatever happens to wandb.
    """

    FINISH_TIMEOUT, STOP_TIMEOUT = 60.0, 10.0

    def __init__(self, run, console: Console, init: dict | None = None):
        self.run = run
        self.console = console
        self.init = init or {}
        """wandb.init's arguments (mode included): a new service resumes the same run with them."""
        self.records: list[dict] = []
        self.failed = False
        self.files_dir = Path(run.dir).parent
        """The run's own offline-run directory: the replay writes a complete one beside it."""
        self._calls: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, name="emodist-wandb", daemon=True).start()

    def log(self, record: dict) -> None:
        self.records.append(record)
        run = self.run  # the worker sets it to None on a failure, at any moment
        if run is not None:
            self._calls.put(("log", run.log, (record,), {}))

    def finish(self, summary: dict | None, files: list[Path], exit_code: int) -> None:
        run = self.run
        timeout = self.FINISH_TIMEOUT if exit_code == 0 else self.STOP_TIMEOUT
        if run is not None:
            self._queue_end(run, summary, files, exit_code)
            done = threading.Event()
            self._calls.put(("done", done.set, (), {}))
            if not done.wait(timeout):
                self.console.print(f"emodist: warning: wandb did not finish within {timeout:.0f} s (its service may "
                                   "have been stopped); metrics.jsonl keeps every record")
                self.failed = False  # a hung service is not replaced: the new one would log twice
        if self.failed and self.init:
            self._replace_service(summary, files, exit_code, timeout)
        self.run = None

    def _queue_end(self, run, summary: dict | None, files: list[Path], exit_code: int) -> None:
        if summary is not None:
            self._calls.put(("summary", run.summary.update, (summary_metrics(summary),), {}))
        for path in files:  # files in the run's directory are uploaded when the run ends
            if path.is_file():
                self._calls.put(("save", shutil.copy, (path, Path(run.dir) / path.name), {}))
        self._calls.put(("finish", run.finish, (), {"exit_code": exit_code}))

    def _replace_service(self, summary: dict | None, files: list[Path], exit_code: int, timeout: float) -> None:
        """A new wandb service for the same run, fed what the dead one may have lost (on a thread, bounded)."""
        outcome: list = []

        def replay() -> None:
            import wandb

            with contextlib.suppress(Exception):  # the old service is gone: nothing to tear down cleanly
                wandb.teardown()
            try:
                run = wandb.init(**{**self.init, "resume": "allow"})
                _define_step(run)
                last = run.summary.get("step") if self.init.get("mode") == "online" else None
                records = [r for r in self.records if last is None or r["step"] >= last]
                for record in records:
                    run.log(record)
                if summary is not None:
                    run.summary.update(summary_metrics(summary))
                for path in files:
                    if path.is_file():
                        shutil.copy(path, Path(run.dir) / path.name)
                run.finish(exit_code=exit_code)
                outcome.append(len(records))
            except Exception as err:  # noqa: BLE001 - a tracker must never end the run
                outcome.append(err)

        worker = threading.Thread(target=replay, name="emodist-wandb-replay", daemon=True)
        worker.start()
        worker.join(timeout)
        if outcome and isinstance(outcome[0], int):
            self.console.print(f"emodist: wandb's service had stopped (a job's signal reaches it too): a new one "
                               f"logged {outcome[0]} record(s) again into the same wandb run")
            if self.init.get("mode") == "offline":
                shutil.rmtree(self.files_dir, ignore_errors=True)  # what it holds, the new one holds too
        else:
            why = f" ({type(outcome[0]).__name__}: {outcome[0]})" if outcome else f" within {timeout:.0f} s"
            self.console.print(f"emodist: warning: wandb could not log the end of the run{why}; metrics.jsonl keeps "
                               "every record")

    def _work(self) -> None:
        while True:
            what, call, args, kwargs = self._calls.get()
            if what == "done":
                call()
            elif self.run is not None:
                try:
                    call(*args, **kwargs)
                except Exception as err:  # noqa: BLE001 - a tracker must never end the run; metrics.jsonl has it all
                    if not self.failed:
                        then = ("a new wandb service logs its records again when the run ends" if self.init else
                                "tracking stops here, metrics.jsonl keeps every record")
                        self.console.print(f"emodist: warning: wandb {what} failed ({type(err).__name__}: {err}); {then}")
                    self.failed = True
                    self.run = None


def _define_step(run) -> None:
    run.define_metric("step")
    run.define_metric("*", step_metric="step")  # our step, not wandb's own counter: resumes may repeat steps


def summary_metrics(summary: dict) -> dict:
    """The flat wandb summary of a finished run: headline metrics, per-label F1, perf totals."""
    out: dict = {}
    for split, prefix in (("dev", "eval"), ("test", "test"), ("dev_tuned", "dev_tuned"), ("test_tuned", "test_tuned")):
        scores = summary.get(split) or {}
        out.update({f"{prefix}/{k}": scores[k] for k in (*HEADLINE, "loss") if k in scores})
        out.update({f"{prefix}/per_label_f1/{label}": s["f1"] for label, s in scores.get("per_label", {}).items()})
    for key, value in summary.get("perf", {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"perf/{key}"] = value
        elif isinstance(value, dict):
            out.update({f"perf/{key}/{k}": v for k, v in value.items()})
    out["train/steps"] = summary.get("train", {}).get("steps")
    return out


def run_name(variant: str) -> str:
    """variant + the SLURM job id (array jobs: <array job>_<task>), or the start time outside SLURM."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID")
    return f"{variant}-{job or time.strftime('%Y%m%d-%H%M%S')}"


def start_wandb(cfg, run_dir: Path, labels: list[str], topology, console: Console) -> Tracker:
    """A wandb run for this training run (main process only), or the do-nothing Tracker when tracking is off."""
    mode, notice = resolve_mode(cfg.track.wandb)
    if mode == "off":
        return Tracker()
    server = wandb_server()
    if mode == "online" and not reachable(server):  # wandb.init would wait 90 s before it gave up
        mode, notice = "offline", (f"the wandb server {urlparse(server).hostname} is unreachable from here: logging "
                                   "offline; upload later with `wandb sync`")
    if notice:
        console.print(f"emodist: {notice}")
    # wandb.init in a process exports its service's address (WANDB_SERVICE) for that process's children; a
    # training run that inherits it (from a notebook, a test, the shell a SLURM job was submitted from) would
    # connect to a service that may be gone by the time it starts (a requeued job starts hours later) and
    # lose its tracking. A run starts a service of its own.
    os.environ.pop("WANDB_SERVICE", None)
    import wandb

    wandb_dir = run_dir / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    run_file = wandb_dir / RUN_FILE
    earlier = json.loads(run_file.read_text()) if run_file.is_file() else {}  # {}: a new run, wandb makes the id
    tags = [cfg.variant, cfg.model.method, f"processes-{topology.num_processes}", f"nodes-{topology.num_nodes}",
            *([topology.distributed_type.lower()] if topology.distributed_type != "NO" else []),
            *([f"zero-{topology.zero_stage}"] if topology.zero_stage is not None else []),
            *([cfg.model.quantization] if cfg.model.quantization != "none" else []),
            *(["smoke"] if cfg.smoke else []), *cfg.track.tags]
    init = dict(
        project=cfg.track.project or os.environ.get("WANDB_PROJECT") or "emodist",
        group=cfg.track.group or os.environ.get("WANDB_RUN_GROUP") or None,
        job_type=cfg.variant, name=earlier.get("name") or run_name(cfg.variant), tags=list(dict.fromkeys(tags)),
        config={**cfg.to_dict(), "labels": labels, "topology": topology.identity()},
        dir=str(run_dir), id=earlier.get("id"), resume="allow", settings=wandb.Settings(silent=True),
    )
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # a stopped service: one warning, not a line per send
    try:
        run = wandb.init(mode=mode, **init)
    except Exception as err:  # noqa: BLE001 - an unreachable server must not cost the training run
        if mode != "online":
            console.print(f"emodist: warning: wandb could not start ({type(err).__name__}: {err}); tracking is off")
            return Tracker()
        console.print(f"emodist: wandb online failed ({type(err).__name__}: {err}): logging offline instead")
        mode = "offline"
        run = wandb.init(mode=mode, **init)
    run_file.write_text(json.dumps({"id": run.id, "name": run.name}) + "\n")
    _define_step(run)
    where = run.url if mode == "online" and run.url else f"{Path(run.dir).parent} (`wandb sync` uploads it)"
    console.print(f"wandb: {mode} run {run.name} in project {run.project}"
                  + (f", group {run.group}" if run.group else "") + f": {where}")
    return WandbTracker(run, console, init={**init, "mode": mode, "id": run.id})


class MetricLogger:
    def __init__(self, path: Path, console: Console, enabled: bool, tracker: Tracker | None = None):
        self.enabled = enabled
        self.console = console
        self.tracker = tracker if enabled and tracker is not None else Tracker()
        self._file = path.open("a", encoding="utf-8") if enabled else None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # a killed run keeps every line it logged
        self.console.log(record)
        self.tracker.log(record)

    def close(self, summary: dict | None = None, files: list[Path] = (), exit_code: int = 0) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # a full disk: the write that failed first says so, not this flush
                self._file.close()
            self._file = None
        self.tracker.finish(summary, list(files), exit_code)
        self.tracker = Tracker()


def exit_code_of(error: BaseException | None) -> int:
    """The exit code of launch/train.py for a run that ends with `error` (None: success)."""
    if error is None:
        return 0
    return getattr(error, "exit_code", 1)


def download_wandb_group(group: str, project: str, entity: str | None, into: Path) -> list[Path]:
    """Fetch summary.json and metrics.jsonl of every run of a wandb group into `into`/<run name>/ (what
    `WandbTracker` saved with each run); return the run directories. Needs the wandb server."""
    if not has_credentials():  # wandb's own "No API key configured" came as if the server had not answered
        raise UsageError(f"--wandb-group {group}: no wandb API key here (WANDB_API_KEY or `wandb login`): log in, or "
                         "compare the run directories")
    import wandb

    try:
        api = wandb.Api()
        found = list(api.runs(f"{entity}/{project}" if entity else project, filters={"group": group}))
    except Exception as err:  # noqa: BLE001 - no network, no key, no such project: all one answer
        raise UsageError(f"--wandb-group {group}: the wandb server did not answer ({type(err).__name__}: {err}); "
                         "log in (`wandb login`) and check --wandb-project, or compare the run directories") from None
    if not found:
        raise UsageError(f"--wandb-group {group}: no runs in project {project}: check the group and --wandb-project")
    runs = []
    for run in found:
        target = into / run.name
        target.mkdir(parents=True, exist_ok=True)
        (target / "config.yaml").write_text(f"# wandb run {run.path}\nvariant: {run.job_type}\n", encoding="utf-8")
        for name in ("summary.json", "metrics.jsonl"):
            try:
                run.file(name).download(root=str(target), replace=True)
            except Exception:  # noqa: BLE001, S112 - an unfinished run has no summary.json: listed as such
                continue
        runs.append(target)
    return runs
