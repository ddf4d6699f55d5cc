"""Fault tolerance: runs killed (SIGKILL) or stopped (SIGTERM) mid-epoch and resumed with `--resume auto`
end exactly where the uninterrupted run ends: the same per-step losses, the same final metrics; single
process, DDP, DeepSpeed ZeRO-2 and ZeRO-3 (whose checkpoints are DeepSpeed's own, partitioned by rank,
frozen weights left out). A checkpoint resumed by another number of processes is refused in one line.

Signals go to every process of the launch, as SLURM delivers them to a job step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, Ahead, error_lines, launch, launch_command, read_metrics, read_summary, wandb_run

from emodist.rundir import checkpoints
from emodist.runtime import errors

pytestmark = pytest.mark.alone  # two-process launches (tests/conftest.py: `in_core_order`)

# 60 steps of 16 examples: about one epoch (64 steps) of the synthetic set, checkpoints mid-epoch; in
# length-grouped batches (the default outside --smoke), which a resume must skip into exactly
SHORT = ["train.max_steps=60", "train.save_every_steps=20", "train.log_every_steps=1", "train.eval_every_steps=15",
         "data.group_by_length=true", "track.plots=false"]
CASES = [
    # CI (25 minutes at most) runs one case per kind of checkpoint: DDP (with QLoRA) and DeepSpeed (ZeRO-2);
    # the single-process cases through SLURM (tests/test_slurm.py preempts, requeues and resumes
    # distilbert.sbatch). The others run in full `pytest`.
    pytest.param("distilbert", 1, marks=pytest.mark.slow),
    pytest.param("mistral-qlora", 1, marks=pytest.mark.slow),
    pytest.param("distilbert", 2, marks=pytest.mark.slow),
    ("mistral-qlora", 2), ("mistral-lora", "zero2"),
    pytest.param("mistral-lora", "zero3", marks=pytest.mark.slow),
]


def command(variant: str, processes: int | str, run_dir: Path, *extra: str) -> list[str]:
    """The launch of a case: 1 process, N DDP processes, or "zero2"/"zero3" (2 processes under DeepSpeed
    ZeRO-2/ZeRO-3; "zero2:1": one process under ZeRO-2)."""
    return launch_command(*case_args(variant, processes, run_dir, *extra), **case_launch(processes))[0]


def case_args(variant: str, processes: int | str, run_dir: Path, *extra: str) -> tuple[str, ...]:
    return ("--variant", variant, "--smoke", "--output-dir", str(run_dir), *SHORT, *extra)


def case_launch(processes: int | str) -> dict:
    """`launch` arguments of the topology of a case (see `command`); plots=True: SHORT already turns them off."""
    stage, _, count = str(processes).partition(":")
    if stage.startswith("zero"):
        return {"config_file": f"deepspeed_{stage}.yaml", "num_processes": int(count or 2), "plots": True}
    topology = {"config_file": "multi_gpu.yaml", "num_processes": int(processes)} if int(processes) > 1 else {}
    return {**topology, "plots": True}


def signal_when(cmd: list[str], checkpoint: Path, sig: signal.Signals, env: dict | None = None) -> tuple[str, set]:
    """Run `cmd` until `checkpoint` is complete, send `sig` to every process of it, wait; return (stderr, the
    names of the processes signalled)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not (checkpoint / checkpoints.STATE_FILE).exists():
        assert proc.poll() is None, f"the run ended before {checkpoint.name}: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    names = set()
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):  # already gone
            names.add(process.name())  # before the signal: a process it ends has no name to read after
            process.send_signal(sig)
    psutil.wait_procs(tree, timeout=120)
    return proc.stderr.read(), names


def without_rank_tracebacks(stderr: str) -> str:
    """The launch's stderr without the traceback lines of ranks other than 0 (torch prefixes them with
    [rankN]:), which would push what rank 0 and the launcher said out of a failure message."""
    lines = [line for line in stderr.splitlines() if not line.startswith("[rank") or line.startswith("[rank0]")]
    return "\n".join(lines)[-6000:]


def stop_and_resume(args: tuple[str, ...], run_dir: Path, checkpoint: str) -> None:
    """Launch `args` into `run_dir`, stop it with SIGTERM once checkpoints/`checkpoint` is complete, then run
    it again with `--resume auto` to its end; assert each launch did what it should."""
    cmd, env = launch_command(*args, "--output-dir", str(run_dir))
    stderr, _ = signal_when(cmd, run_dir / "checkpoints" / checkpoint, signal.SIGTERM, env=env)
    assert "emodist: stopped by SIGTERM at step" in stderr, stderr[-3000:]
    resumed = subprocess.run([*cmd, "--resume", "auto"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def steps_and_scores(run_dir: Path) -> list[tuple]:
    return [(r["step"], r.get("train/loss"), r.get("train/lr"), r.get("eval/f1_micro"), r.get("eval/loss"))
            for r in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def references(tmp_path_factory, cache_dir):
    """The uninterrupted run of a case, `references(variant, processes)`, run the first time it is asked for;
    `references.start(variant, processes)` starts it beside the test that will ask for it (`conftest.Ahead`)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    ahead = Ahead()

    def run_dir(variant: str, processes: int | str) -> Path:
        return root / f"{variant}-{processes}"

    def start(variant: str, processes: int | str) -> None:
        ahead.start((variant, processes), *case_args(variant, processes, run_dir(variant, processes)),
                    **case_launch(processes))

    def reference(variant: str, processes: int | str) -> Path:
        start(variant, processes)
        result = ahead.get((variant, processes))
        assert result.returncode == 0, result.stderr[-3000:]
        return run_dir(variant, processes)

    reference.start = start
    yield reference
    ahead.close()


@pytest.mark.parametrize(("variant", "processes"), CASES)
def test_sigterm_then_sigkill_then_resume_ends_like_the_uninterrupted_run(references, tmp_path, variant, processes):
    references.start(variant, processes)
    run_dir = tmp_path / "run"
    cmd = command(variant, processes, run_dir)

    # SIGTERM after the step-20 checkpoint to every process, wandb's service too (scancel signals a whole
    # step; CI failed here when the stopped service took the main rank's wandb calls down with it): every
    # rank stops at the same step boundary and saves
    wandb = {**os.environ, "WANDB_MODE": "offline"}
    stderr, signalled = signal_when(cmd, run_dir / "checkpoints" / "step-20", signal.SIGTERM, env=wandb)
    assert "emodist: stopped by SIGTERM at step" in stderr, without_rank_tracebacks(stderr)
    assert "wandb-core" in signalled
    stopped, _ = checkpoints.latest_checkpoint(run_dir)
    state = checkpoints.read_state(stopped)
    assert state["stopped_by"] == "SIGTERM" and 20 < state["step"] < 60
    assert not (run_dir / "summary.json").exists()
    # the stopped service lost what it had buffered: a new one logged every record again, into the same run
    logged = [(r["step"], r.get("train/loss")) for r in wandb_run(run_dir)["history"]]
    assert logged == [(r["step"], r.get("train/loss")) for r in read_metrics(run_dir)]

    # resumed, then killed outright after the step-40 checkpoint: no chance to save anything more
    signal_when([*cmd, "--resume", "auto"], run_dir / "checkpoints" / "step-40", signal.SIGKILL, env=wandb)
    assert not (run_dir / "summary.json").exists()

    result = subprocess.run([*cmd, "--resume", "auto"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout
    reference = references(variant, processes)
    assert steps_and_scores(run_dir) == steps_and_scores(reference)
    resumed, uninterrupted = read_summary(run_dir), read_summary(reference)
    assert resumed["dev"] == uninterrupted["dev"] and resumed["test"] == uninterrupted["test"]
    assert resumed["train"]["steps"] == 60
    # throughput over the three sessions, each counting its steps up to the checkpoint the next resumed from
    perf = resumed["perf"]
    assert perf["sessions"] == 3 and perf["train_samples"] == 60 * 16 == uninterrupted["perf"]["train_samples"]
    assert perf["train_samples_per_s"] == pytest.approx(perf["train_samples"] / perf["train_seconds"])
    assert "Traceback" not in stderr and "ConnectionResetError" not in stderr  # the stopped wandb service too


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_exits_with_the_documented_code(tmp_path, cache_dir, sig):
    """Run directly (no launcher in between), a SIGTERM ends the process with EXIT_PREEMPTED (75); so does the
    SIGHUP of an ssh session that dropped, which killed the run with the steps since its last checkpoint."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "launch" / "train.py"), "--variant", "distilbert", "--smoke",
           "--output-dir", str(run_dir), "train.max_steps=400", "train.save_every_steps=10"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not (run_dir / "checkpoints" / "step-10" / checkpoints.STATE_FILE).exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == errors.EXIT_PREEMPTED
    assert checkpoints.read_state(checkpoints.latest_checkpoint(run_dir)[0])["stopped_by"] == sig.name


def test_a_terminal_that_hangs_up_stops_the_run_with_a_checkpoint(tmp_path, cache_dir):
    """An ssh session that drops: the terminal is hung up before SIGHUP arrives, so writing the progress failed
    with EIO, an internal error (exit 70), and a hangup while finishing would have lost the evaluation."""
    import os
    import pty
    import select

    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "launch" / "train.py"), "--variant", "distilbert", "--smoke", "--output-dir",
               str(run_dir), "train.max_steps=400", "train.save_every_steps=10", "train.log_every_steps=1",
               "track.plots=false"]
    pid, terminal = pty.fork()
    if pid == 0:  # the run, on the terminal, its stderr kept in a file for the assertions
        os.dup2(os.open(tmp_path / "stderr.txt", os.O_WRONLY | os.O_CREAT), 2)
        os.chdir(ROOT)
        os.execv(sys.executable, command)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "step-10" / checkpoints.STATE_FILE).exists():
        if select.select([terminal], [], [], 0.2)[0]:
            os.read(terminal, 65536)  # what it prints, read as a terminal would
        assert time.monotonic() < deadline, (tmp_path / "stderr.txt").read_text()[-3000:]
    os.close(terminal)  # the connection drops: the kernel hangs the terminal up and sends SIGHUP
    _, status = os.waitpid(pid, 0)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert os.waitstatus_to_exitcode(status) == errors.EXIT_PREEMPTED, stderr[-3000:]
    assert checkpoints.read_state(checkpoints.latest_checkpoint(run_dir)[0])["stopped_by"] == "SIGHUP"
    assert "Traceback" not in stderr and "internal error" not in stderr


def test_a_hangup_ignored_by_nohup_is_left_ignored():
    from emodist.runtime.signals import StopSignals

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with StopSignals():
            assert callable(signal.getsignal(signal.SIGHUP))
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has installed a handler for `sig` (its SigCgt mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (sig - 1) & 1)


def test_a_scheduler_signal_while_the_model_loads_stops_the_run_after_its_first_step(tmp_path, cache_dir):
    """SLURM's USR1 can come while a 7B model still loads: the job must stop with a checkpoint (and be
    requeued), not die of the signal's default action."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "launch" / "train.py"), "--variant", "distilbert", "--smoke",
           "--output-dir", str(run_dir), "train.max_steps=40"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not catches(proc.pid, signal.SIGUSR1):  # the handlers are installed before torch even loads
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR1)
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == errors.EXIT_PREEMPTED, stderr[-3000:]
    said = [line for line in stderr.splitlines() if line.startswith("emodist:")]
    assert said[0] == ("emodist: received SIGUSR1: the run is still loading: it stops after its first training "
                       "step, with a checkpoint")
    assert said[-1].startswith("emodist: stopped by SIGUSR1 at step 1: saved ")
    checkpoint, _ = checkpoints.latest_checkpoint(run_dir)
    assert checkpoint.name == "step-1" and checkpoints.read_state(checkpoint)["stopped_by"] == "SIGUSR1"


@pytest.mark.slow  # kept out of CI's 25 minutes; `pytest` runs it
def test_a_signal_while_a_run_that_only_finishes_loads_is_answered_by_what_happens(tmp_path, cache_dir):
    """A run killed while it finished only finishes on --resume auto: a scheduler's signal while it loaded was
    acknowledged as "it stops after its first training step, with a checkpoint", then the run finished and
    exited 0 without a word of that (found by a new user)."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "launch" / "train.py"), "--variant", "distilbert", "--smoke", "--output-dir",
           str(run_dir), "train.max_steps=20", "train.save_every_steps=10", "track.plots=false"]
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    (run_dir / "summary.json").unlink()  # killed while it finished: its last checkpoint holds all of the training
    proc = subprocess.Popen([*cmd, "--resume", "auto"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    while not catches(proc.pid, signal.SIGUSR1):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR1)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert ("emodist: the SIGUSR1 came once training had reached its last step: finishing its evaluation and export "
            "first (a Ctrl-C stops now, and --resume auto finishes later)") in " ".join(stdout.split())
    assert read_summary(run_dir)["train"]["steps"] == 20


def test_a_ctrl_c_to_accelerate_s_launcher_alone_is_named_as_what_reaches_training(tmp_path, cache_dir):
    """The launcher turns its own SIGINT into SIGTERM to the training process: the stop line says so,
    instead of a bare SIGTERM that the user never sent."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "-q", "--config_file",
           str(ROOT / "accelerate_configs" / "cpu.yaml"), str(ROOT / "launch" / "train.py"), "--variant", "distilbert",
           "--smoke", "--output-dir", str(run_dir), "train.max_steps=400", "train.save_every_steps=10"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    while not (run_dir / "checkpoints" / "step-10" / checkpoints.STATE_FILE).exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 130
    said = [line for line in stderr.splitlines() if line.startswith("emodist:")]
    assert ("emodist: received SIGTERM (under accelerate launch, also what a Ctrl-C to the launcher becomes): "
            "stopping at the next step boundary, after saving a checkpoint") in said, stderr[-3000:]
    assert said[-1].startswith("emodist: stopped by SIGTERM at step "), stderr[-3000:]
    assert checkpoints.read_state(checkpoints.latest_checkpoint(run_dir)[0])["stopped_by"] == "SIGTERM"


def test_auto_skips_a_checkpoint_cut_short(references, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(references("distilbert", 1), run_dir)
    saved = run_dir / "checkpoints"
    assert checkpoints.latest_checkpoint(run_dir) == (saved / "step-60", [])
    weights = saved / "step-60" / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])  # a file cut short
    (saved / "step-80").mkdir()  # a directory with no state.json
    (saved / ".step-100.tmp").mkdir()  # a save that never finished
    assert checkpoints.latest_checkpoint(run_dir) == (saved / "step-40", [
        (saved / "step-80", "no state.json (a save that never finished)"),
        (saved / "step-60", f"model.safetensors is cut short or has grown ({size // 2:,} bytes, saved with {size:,})"),
    ])


@pytest.mark.parametrize(("change", "expected"), [
    (["model.lora.r=8"], "model.lora.r=16 there, 8 here"),
    (["data.max_train_examples=512"], "data.max_train_examples=null there, 512 here"),
])
def test_resuming_with_other_settings_is_refused_in_one_line(references, tmp_path, change, expected):
    run_dir = tmp_path / "run"
    shutil.copytree(references("mistral-qlora", 1), run_dir)
    before = (run_dir / "metrics.jsonl").read_text()
    result = launch("--variant", "mistral-qlora", "--smoke", "--output-dir", str(run_dir), *SHORT, *change,
                    "--resume", "auto", accelerate=False)
    assert result.returncode == errors.EXIT_USAGE
    [line] = error_lines(result)
    assert line.startswith(f"emodist: error: --resume auto: {run_dir / 'checkpoints' / 'step-60'} was trained with "
                           "other settings: ")
    assert expected in line and "start a new run in a new --output-dir" in line
    assert (run_dir / "metrics.jsonl").read_text() == before  # nothing of the run was touched
    assert (run_dir / "summary.json").exists()


def test_resuming_a_different_data_set_is_refused(references, tmp_path):
    from test_data import write_goemotions

    run_dir = tmp_path / "run"
    shutil.copytree(references("distilbert", 1), run_dir)
    result = launch("--variant", "distilbert", "--smoke", "--output-dir", str(run_dir), *SHORT,
                    "--data-dir", str(write_goemotions(tmp_path / "ge")), "--resume", "auto", accelerate=False)
    assert result.returncode == errors.EXIT_USAGE
    [line] = error_lines(result)
    assert "labels: " in line and "data.split.dev=" in line  # the data's content decides, not the name of its layout


def test_resuming_after_the_data_changed_is_refused_and_a_moved_copy_resumes(tmp_path):
    """The same --data-dir with one training text edited is other data; the same files elsewhere are not."""
    from test_data import write_goemotions

    data_dir = write_goemotions(tmp_path / "ge")
    run_dir = tmp_path / "run"
    short = ["--variant", "distilbert", "--smoke", "--output-dir", str(run_dir), "train.save_every_steps=1",
             "data.max_eval_examples=2"]
    first = launch(*short, "--data-dir", str(data_dir), "train.max_steps=1", accelerate=False)
    assert first.returncode == 0, first.stderr[-3000:]
    train = data_dir / "train.tsv"
    original = train.read_text()
    train.write_text(original.replace("ok then", "ok then, fine"))
    edited = launch(*short, "--data-dir", str(data_dir), "train.max_steps=2", "--resume", "auto", accelerate=False)
    [line] = error_lines(edited)
    assert line.startswith(f"emodist: error: --resume auto: {run_dir / 'checkpoints' / 'step-1'} was trained on other "
                           'data: data.split.train="3 texts, ') and line.endswith(
        "resume with the data it was trained on, or start a new run in a new --output-dir")
    train.write_text(original)
    moved = data_dir.rename(tmp_path / "moved")
    resumed = launch(*short, "--data-dir", str(moved), "train.max_steps=2", "--resume", "auto", accelerate=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_summary(run_dir)["train"]["steps"] == 2


def other_process_count(run_dir: Path, there: int, here: int) -> str:
    """The refusal of resuming the step-60 checkpoint of `run_dir`, written by `there` processes, with `here`."""
    return (f"emodist: error: --resume auto: {run_dir / 'checkpoints' / 'step-60'} was written with num_processes="
            f"{there}, this run has num_processes={here}; each rank's data position and RNG stream belong to its "
            "rank. Launch with the same accelerate config and --num_processes, or start a new run in a new --output-dir")


def test_resuming_with_another_process_count_is_refused(references, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(references("distilbert", 1), run_dir)
    result = launch("--variant", "distilbert", "--smoke", "--output-dir", str(run_dir), *SHORT, "--resume", "auto",
                    config_file="multi_gpu.yaml", num_processes=2)
    assert error_lines(result) == [other_process_count(run_dir, there=1, here=2)]


def test_a_zero_checkpoint_resumed_by_another_number_of_processes_is_refused(references, tmp_path):
    """DeepSpeed partitions the optimizer state by rank: 2 ranks' ZeRO-2 checkpoint under 1 process."""
    run_dir = tmp_path / "run"
    shutil.copytree(references("mistral-lora", "zero2"), run_dir)
    result = subprocess.run(command("mistral-lora", "zero2:1", run_dir, "--resume", "auto"), cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert error_lines(result) == [other_process_count(run_dir, there=2, here=1)]


def test_a_diverging_loss_stops_the_run_and_keeps_the_checkpoints_before_it(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = launch("--variant", "distilbert", "--smoke", "--output-dir", str(run_dir), "train.max_steps=20",
                    "train.save_every_steps=1", "train.eval_every_steps=0",  # the training loss's own check
                    "optim.lr=1e30", "optim.max_grad_norm=0", accelerate=False)
    assert result.returncode == errors.EXIT_DIVERGED
    [line] = error_lines(result)
    newest, _ = checkpoints.latest_checkpoint(run_dir)
    bad_step = checkpoints.read_state(newest)["step"] + 1
    assert line == (f"emodist: error: the training loss became NaN or infinite at step {bad_step} (epoch 0); the "
                    f"checkpoints saved before it are kept (the newest, {newest}, may already hold the diverging "
                    "weights). Start again with a lower optim.lr or with clipping (optim.max_grad_norm)")
    assert not (run_dir / "checkpoints" / f"step-{bad_step}").exists()
    assert all(json.loads(line)["step"] < bad_step for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    assert not (run_dir / "summary.json").exists()


def test_a_dev_loss_that_is_no_longer_finite_stops_the_run_before_it_saves(tmp_path, cache_dir):
    """At lr 1e30 the first step's loss is finite (the weights before it were) and the dev loss after it is NaN:
    the run went on and kept that step's checkpoint as its best."""
    run_dir = tmp_path / "run"
    result = launch("--variant", "distilbert", "--smoke", "--output-dir", str(run_dir), "train.max_steps=3",
                    "train.eval_every_steps=1", "train.save_every_steps=1", "optim.lr=1e30", "optim.head_lr=1e30",
                    "optim.max_grad_norm=0", accelerate=False)
    assert result.returncode == errors.EXIT_DIVERGED
    assert error_lines(result) == [
        "emodist: error: the dev loss became NaN or infinite at step 1 (epoch 0); no checkpoint was saved yet. Start "
        "again with a lower optim.lr or with clipping (optim.max_grad_norm)"]
    assert not (run_dir / "checkpoints" / "step-1").exists()
    one = launch("--variant", "distilbert", "--smoke", "--output-dir", str(tmp_path / "one"), "train.max_steps=1",
                 "optim.lr=1e30", "optim.head_lr=1e30", "optim.max_grad_norm=0", accelerate=False)
    assert error_lines(one)[0].startswith("emodist: error: the dev loss became NaN or infinite at step 1 (epoch 0); the "
                                          "checkpoints saved before it are kept")  # the final evaluation's: no export
    assert not (tmp_path / "one" / "model").exists() and not (tmp_path / "one" / "summary.json").exists()


def test_a_divergence_under_ddp_stops_every_rank_with_one_line(tmp_path, cache_dir):
    """The ranks agree on the divergence at the same step (the check is all-reduced): each stops, the main
    rank says so once, and the launcher's summary names that line as the root cause."""
    run_dir = tmp_path / "run"
    result = launch("--variant", "distilbert", "--smoke", "--output-dir", str(run_dir), "train.max_steps=20",
                    "train.save_every_steps=1", "train.eval_every_steps=0", "optim.lr=1e30", "optim.max_grad_norm=0",
                    config_file="multi_gpu.yaml", num_processes=2, launcher_args=("-q",))
    assert result.returncode == 1  # torchrun's code for any failure
    [line] = error_lines(result)
    assert "emodist: error on rank" not in result.stderr  # rank 1 met the same divergence: it stays quiet
    last_good, _ = checkpoints.latest_checkpoint(run_dir)
    bad_step = checkpoints.read_state(last_good)["step"] + 1
    assert line.startswith(f"emodist: error: the training loss became NaN or infinite at step {bad_step} (epoch 0)")
    assert f"traceback : {line}" in result.stderr[result.stderr.index("Root Cause"):]
    assert not (run_dir / "summary.json").exists()
