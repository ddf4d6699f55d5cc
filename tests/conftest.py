"""Shared test set-up: offline, quiet, and one helper to run the real launcher in a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest
from hypothesis import settings

# The fuzzers (tests/test_fuzz.py) run the same cases every time; `--hypothesis-profile=explore` searches on
settings.register_profile("default", max_examples=150, derandomize=True, deadline=None)
settings.register_profile("explore", max_examples=3000, deadline=None)
settings.load_profile("default")

ROOT = Path(__file__).resolve().parents[1]
GOEMOTIONS = Path(os.environ.get("EMODIST_GOEMOTIONS", ROOT.parent / "shared" / "data" / "goemotions"))

# No test may reach the network or a tracker account; wandb is off but where a test turns it on (offline).
# Set, not defaulted: with WANDB_MODE=offline from the shell every launch started an offline wandb run, 2-3 s
# each (its import and service), which only the tests that read the wandb files back need.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------------------------------------------
# No green by skipping. Tests marked `gpu` leave the run where no CUDA device is (deselected and counted,
# so `pytest -m gpu` on such a machine ends with "no tests ran", exit 5). Under EMODIST_CI=1 (set by
# .ci/run) any other skip is a failure: CI is green only when every test it selected ran.

STRICT = os.environ.get("EMODIST_CI", "") not in ("", "0")
DESELECTED: dict[str, int] = {}  # why -> how many


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


NO_CUDA = "marked gpu, and this machine has no CUDA device"
NO_CUDA_KEY = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)  # before -m and -k: a gpu test is counted as deselected for want of CUDA
def pytest_collection_modifyitems(config, items):
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not _cuda():
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]
        for item in gpu:
            item.stash[NO_CUDA_KEY] = True
        config.hook.pytest_deselected(items=gpu)
    items[:] = in_core_order(items)


# ---------------------------------------------------------------------------------------------------
# Two cores, both kept busy. A launch is mostly one process's imports and a tiny model's steps: one core. So
# the session's background queue (`Ahead`) runs the launches tests will read (the smoke runs, the SLURM jobs)
# beside the tests. A two-process launch is another matter: its ranks meet at every step, and a third process
# on the two cores stalls both (a QLoRA run under DDP: 22 s alone, 110 s in CI beside the background work).
# Tests marked `alone` launch those: they run last, once the background queue has finished.


def in_core_order(items: list) -> list:
    """`items` by module, in three groups, each in file order: the modules that need nothing from the background
    queue, those that read its work (a smoke run; a module's `start_ahead`: by then done or under way), and
    those marked `alone`. A module's tests stay together (its module fixtures are set up once)."""
    modules: dict = {}
    for item in items:
        modules.setdefault(item.module, []).append(item)

    def group(module) -> int:
        tests = modules[module]
        if any(item.get_closest_marker("alone") for item in tests):
            return 2
        return int(hasattr(module, "start_ahead") or any("smoke_runs" in item.fixturenames for item in tests))

    return [item for module in sorted(modules, key=group) for item in modules[module]]


@pytest.fixture(autouse=True)
def _alone(request):
    """A test marked `alone` starts once the background queue has nothing left to run."""
    if request.node.get_closest_marker("alone"):
        request.getfixturevalue("ahead").drain()


def pytest_deselected(items):
    for item in items:
        if item.stash.get(NO_CUDA_KEY, False):
            why = NO_CUDA
        else:
            option = item.config.option
            why = "not selected by " + " and ".join(
                f'{flag} "{expr}"' for flag, expr in (("-m", option.markexpr), ("-k", option.keyword)) if expr)
        DESELECTED[why] = DESELECTED.get(why, 0) + 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under EMODIST_CI=1, where every selected test must run: {reason}"


def pytest_terminal_summary(terminalreporter):
    def tests(*outcomes: str) -> set[str]:
        return {report.nodeid for key in outcomes for report in terminalreporter.stats.get(key, [])}

    skipped = tests("skipped")
    ran = tests("passed", "failed", "error") - skipped
    why = "; ".join(f"{count} {reason}" for reason, count in DESELECTED.items()) or "none"
    line = f"tests: {len(ran)} ran, {len(skipped)} skipped, {sum(DESELECTED.values())} deselected ({why})"
    terminalreporter.write_line(line)
    if not ran and DESELECTED.get(NO_CUDA):
        terminalreporter.write_line(f"nothing ran: the {DESELECTED[NO_CUDA]} test(s) marked gpu need a CUDA device")
    summary = os.environ.get("EMODIST_TEST_SUMMARY")
    if summary:  # .ci/run ends with this line
        Path(summary).write_text(line + "\n")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A tokenization cache shared by the whole session and by the subprocesses it starts."""
    path = tmp_path_factory.mktemp("emodist-cache")
    os.environ["EMODIST_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def goemotions() -> Path:
    if not (GOEMOTIONS / "train.tsv").exists():
        pytest.skip(f"GoEmotions is not at {GOEMOTIONS} (set EMODIST_GOEMOTIONS)")
    return GOEMOTIONS


def launch(*args: str, timeout: int = 600, accelerate: bool = True, config_file: str | None = None,
           num_processes: int = 1, launcher_args: tuple[str, ...] = (), plots: bool = False,
           env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """Run launch/train.py as a user would (`accelerate launch ...`), returning the finished process.

    `config_file`: a file of accelerate_configs/ (the topology); `launcher_args`: more `accelerate launch` flags;
    `plots`: draw the run's plots/ (off by default: 2 s a run that only the plot tests look at); `env`: variables
    to set for the run (None unsets one).
    """
    command, environ = launch_command(*args, accelerate=accelerate, config_file=config_file,
                                      num_processes=num_processes, launcher_args=launcher_args, plots=plots, env=env)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environ)


def launch_command(*args: str, accelerate: bool = True, config_file: str | None = None, num_processes: int = 1,
                   launcher_args: tuple[str, ...] = (), plots: bool = False,
                   env: dict[str, str | None] | None = None) -> tuple[list[str], dict[str, str]]:
    """(the command line, the environment) of a `launch` with these arguments."""
    if not plots:
        args = (*args, "track.plots=false")
    script = str(ROOT / "launch" / "train.py")
    if accelerate:
        command = [sys.executable, "-m", "accelerate.commands.launch"]
        if config_file:
            command += ["--config_file", str(ROOT / "accelerate_configs" / config_file)]
        command += ["--num_processes", str(num_processes), *launcher_args]
        distributed = num_processes > 1 or (config_file or "").startswith("deepspeed")
        if distributed and "--main_process_port" not in launcher_args:
            command += ["--main_process_port", "0"]  # a free port: runs beside this one must not collide
        command += [script, *args]
    else:
        command = [sys.executable, script, *args]
    environ = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return command, environ


class Ahead:
    """Launches run on a background thread ahead of the tests that read them.

    Run one after another, the tests keep one of CI's two cores idle most of the time: a launch is mostly
    imports and a tiny model's steps, on one core (a full CI run measured 104% CPU). Work started here runs
    beside the test in the foreground. `start(key, *launch_args, **launch_kwargs)` queues a launch (once per
    key), `call(key, work)` any other work; `get(key)` waits for its result (a launch not queued yet is queued
    first); `close()` cancels what is queued and kills the launches still running: a partial selection of
    tests does not wait for them.
    """

    def __init__(self):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ahead")  # one launch at a time beside the tests
        self._futures: dict = {}
        self._running: set[subprocess.Popen] = set()
        self._closed = False

    def start(self, key, *args: str, timeout: int = 600, **kwargs) -> None:
        if key not in self._futures:
            self._futures[key] = self._pool.submit(self._run, launch_command(*args, **kwargs), timeout)

    def call(self, key, work) -> None:
        """Queue `work()` (once per key), for work other than a launch."""
        if key not in self._futures:
            self._futures[key] = self._pool.submit(work)

    def started(self, key) -> bool:
        return key in self._futures

    def finished(self, key):
        """The result of `key` if its work has ended well; else None, and it will not start any more."""
        future = self._futures.get(key)
        if future is None or future.cancel() or not future.done() or future.exception() is not None:
            return None
        return future.result()

    def get(self, key, *args: str, **kwargs):
        self.start(key, *args, **kwargs)
        return self._futures[key].result()

    def drain(self) -> None:
        """Wait until everything queued has ended (well or not: `get` tells)."""
        wait(list(self._futures.values()))

    def _run(self, prepared: tuple[list[str], dict[str, str]], timeout: int) -> subprocess.CompletedProcess:
        command, environ = prepared
        with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=environ, start_new_session=True) as proc:
            self._running.add(proc)
            if self._closed:  # closed between the queue and here
                _kill(proc)
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                raise
            finally:
                self._running.discard(proc)
        return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)

    def close(self) -> None:
        self._closed = True
        for future in self._futures.values():
            future.cancel()
        for proc in list(self._running):
            _kill(proc)
        self._pool.shutdown(wait=True)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL to the launch's whole process group (the launcher and its ranks)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


NO_WANDB_ACCOUNT = {"WANDB_MODE": None, "WANDB_API_KEY": None, "NETRC": "/nonexistent/netrc"}
"""A user who never logged in to wandb and set no mode: tracking falls back to offline."""


SMOKE_VARIANTS = ["distilbert", "gemma-lora", "mistral-qlora", "minilm", "mistral-lora"]
"""Every variant, in the order the tests first ask for their smoke runs (tests/test_export.py first)."""


@pytest.fixture(scope="session")
def ahead():
    """The session's background queue (`Ahead`, one launch at a time): the smoke runs, then the SLURM jobs."""
    queue = Ahead()
    yield queue
    queue.close()


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory, cache_dir, ahead):
    """smoke_runs(variant) -> (run_dir, result): one finished `--smoke` run per variant, shared by every test
    of the session (as a user runs it: plots on, wandb offline for want of a key); queued on `ahead`."""
    run_dirs: dict[str, Path] = {}

    def start(variant: str) -> None:
        if variant not in run_dirs:
            run_dirs[variant] = tmp_path_factory.mktemp("runs") / f"smoke-{variant}"
        ahead.start(("smoke", variant), "--variant", variant, "--smoke", "--output-dir", str(run_dirs[variant]),
                    plots=True, env=NO_WANDB_ACCOUNT)

    def get(variant: str) -> tuple[Path, subprocess.CompletedProcess]:
        start(variant)
        result = ahead.get(("smoke", variant))
        assert result.returncode == 0, result.stderr[-3000:]
        return run_dirs[variant], result

    get.start = start
    return get


@pytest.fixture(scope="session", autouse=True)
def _work_ahead(request, cache_dir, tmp_path_factory):
    """At the session's first test, queues on `ahead` what selected tests will wait for: every smoke run when
    one of them reads one; then what a test module's `start_ahead(items, ahead, tmp_path_factory)` queues
    (tests/test_slurm.py: its jobs; it returns what stops them at the session's end, if anything). By the
    time those tests run, the work is done or under way."""
    items = request.session.items
    if not items:
        return
    queue = request.getfixturevalue("ahead")
    if any("smoke_runs" in item.fixturenames for item in items):
        smoke_runs = request.getfixturevalue("smoke_runs")
        for variant in SMOKE_VARIANTS:
            smoke_runs.start(variant)
    for module in dict.fromkeys(item.module for item in items):
        start_ahead = getattr(module, "start_ahead", None)
        stop = start_ahead and start_ahead([item for item in items if item.module is module], queue, tmp_path_factory)
        if stop:
            request.addfinalizer(stop)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The lines emodist itself printed as errors (a launcher may add its own report after them)."""
    return [line for line in result.stderr.splitlines() if line.startswith("emodist: error:")]


def assert_drawn(png: Path) -> None:
    """`png` decodes to a real picture (over 100 pixels each way) that is not one flat colour."""
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100, f"{png.name} is {pixels.shape[:2]}"
    assert pixels[..., :3].std() > 0.02, f"{png.name} is blank"


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def metrics_so_far(run_dir: Path) -> list[dict]:
    """The records of a run still training: none before metrics.jsonl exists or while a line is half written."""
    try:
        return read_metrics(run_dir)
    except (FileNotFoundError, ValueError):
        return []


def rescore_dev(run_dir: Path) -> tuple[dict, object]:
    """(dev metrics with the BCE `loss`, the model) of the run's exported `model/` at threshold 0.5."""
    return rescore(run_dir, "dev")


def rescore(run_dir: Path, split: str, tuned: bool = False) -> tuple[dict, object]:
    """(metrics of `split` with the BCE `loss`, the model) of the run's exported `model/`, reloaded in this
    process; `tuned`: at the per-label thresholds of model/thresholds.json, as inference applies them.

    The split is rebuilt from the run's own config.yaml; batches (shortest first, padded as on a CPU) and
    autocast are the run's, so a 4-bit or bf16 model computes exactly what the run computed.
    """
    import torch
    import torch.nn.functional as F
    from scipy.special import expit

    from emodist import config, data
    from emodist.data import sampling
    from emodist.scoring import metrics, thresholds
    from emodist.serve import model_dir

    cfg = config.load(config_file=str(run_dir / "config.yaml"))
    examples = data.load(cfg.data, seed=cfg.train.seed).splits[split]
    summary = read_summary(run_dir)
    model, tokenizer = model_dir.load_trained(run_dir / "model")
    cut = thresholds.for_labels(thresholds.load(run_dir / "model"), summary["labels"]) if tuned else 0.5
    collate = data.collator(tokenizer, cfg.data.pad_to_multiple_of or 1)
    features = [tokenizer(t, truncation=True, max_length=cfg.data.max_length) for t in examples.texts]
    order = sampling.by_length([len(f["input_ids"]) for f in features], longest_first=False)
    parts = []
    batch = cfg.train.eval_batch_size
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=summary["mixed_precision"] == "bf16"):
        for start in range(0, len(examples), batch):
            parts.append(model(**collate([features[i] for i in order[start:start + batch]])).logits.float())
    logits = torch.empty_like(torch.cat(parts))
    logits[torch.from_numpy(order)] = torch.cat(parts)
    scores = metrics.multilabel_metrics(examples.targets, expit(logits.numpy()), summary["labels"], cut)
    scores["loss"] = float(F.binary_cross_entropy_with_logits(logits, torch.from_numpy(examples.targets)))
    return scores, model


def wandb_files(run_dir: Path) -> list[Path]:
    """The offline wandb runs of a run directory, one per session that logged (`wandb/offline-run-*/run-*.wandb`),
    oldest first."""
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def wandb_records(run_dir: Path, path: Path | None = None) -> list:
    """Every record of the run's one offline wandb run (or of the file `path`), read back from the file.

    The file is a LevelDB-style log (wandb's "transaction log"): a 7-byte header (":W&B", magic 0xBEE1,
    version 0), then 32 KiB blocks of chunks [crc32c:4][length:2, little endian][type:1][data], where type
    1 is a whole record and 2/3/4 the first/middle/last piece of one; each record is a wandb Record protobuf.
    """
    from wandb.proto import wandb_internal_pb2

    if path is None:
        [path] = wandb_files(run_dir)
    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a wandb transaction log"
    block, position, pieces, records = 32768, 7, b"", []
    while position + 7 <= len(raw):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        length = int.from_bytes(raw[position + 4:position + 6], "little")
        kind = raw[position + 6]
        data = raw[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 0:  # zero padding at the end
            break
        pieces = data if kind in (1, 2) else pieces + data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
    return records


def wandb_run(run_dir: Path, path: Path | None = None) -> dict:
    """What the offline wandb run holds (or the file `path`): its run record fields, logged history and summary."""
    import json as _json

    out = {"history": [], "summary": {}}
    for record in wandb_records(run_dir, path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {"project": record.run.project, "group": record.run.run_group, "job_type": record.run.job_type,
                          "name": record.run.display_name, "tags": list(record.run.tags), "id": record.run.run_id}
        elif kind == "history":
            out["history"].append({item.key or "/".join(item.nested_key): _json.loads(item.value_json)
                                   for item in record.history.item})
        elif kind == "summary":
            out["summary"].update({item.key or "/".join(item.nested_key): _json.loads(item.value_json)
                                   for item in record.summary.update})
    return out


def train_in_process(*args: str) -> tuple[int, str, str]:
    """launch/train.py's `main` in this process, as `python launch/train.py ARGS` runs it: (exit code, stdout,
    stderr). For refusals, which end before any training: no interpreter start, no imports."""
    import importlib.util
    import io

    from accelerate.state import AcceleratorState, GradientState

    spec = importlib.util.spec_from_file_location("emodist_launch_train", ROOT / "launch" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            code = script.main([*args, "track.plots=false"])
    finally:  # the next Accelerator of this process starts from scratch, as in a new process
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return code, stdout.getvalue(), stderr.getvalue()


def snapshot(directory: Path) -> dict[str, str]:
    """{path relative to `directory`: SHA-256 of the file (or "dir")} of everything in it, hidden files too."""
    import hashlib

    return {str(p.relative_to(directory)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*"))}
