"""Faults that are not the user's input: a disk that fills up, and a bug. Each ends in one line that says
what happened and what was kept, with its documented exit code, never a traceback on the terminal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, error_lines, launch

from emodist.rundir import checkpoints
from emodist.runtime import errors

SMOKE = ["--variant", "distilbert", "--smoke", "train.save_every_steps=10", "train.eval_every_steps=10",
         "train.max_steps=40"]  # evaluations (which save a new best) on the same steps as the saves


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(kib) -> a directory on a file system of that size (a tmpfs: needs root, as CI runs)."""
    mounts = []

    def make(kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small file system needs root (CI runs as root)")
        target = tmp_path / f"disk-{kib}k"
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(target)], check=True)
        mounts.append(target)
        return target

    yield make
    for target in mounts:
        subprocess.run(["umount", "-l", str(target)], check=True)


def assert_no_noise(stderr: str) -> None:
    assert "Traceback" not in stderr and "socket.send" not in stderr, stderr[-3000:]


def test_a_disk_too_small_for_the_first_checkpoint_stops_the_run_with_one_line(small_disk, cache_dir):
    """The tiny model's base (336 KiB) fits, its first checkpoint (1 MiB) does not: the write fails mid-way."""
    run_dir = small_disk(800) / "run"
    result = launch(*SMOKE, "--output-dir", str(run_dir), accelerate=False)
    assert result.returncode == errors.EXIT_NO_SPACE, result.stderr[-3000:]
    [line] = error_lines(result)
    assert re.fullmatch(
        rf"emodist: error: no space left on the disk of {re.escape(str(run_dir / 'checkpoints'))} while saving "
        r"checkpoint step-10: it needs more than the [\d.,]+ (KiB|MiB) it had written, [\d.,]+ (B|KiB) were free; the "
        r"partial checkpoint was removed and no checkpoint was complete yet: free some space, then resume with "
        r"--resume auto", line), line
    assert list((run_dir / "checkpoints").iterdir()) == []
    assert_no_noise(result.stderr)


def test_a_disk_too_small_for_the_next_checkpoint_keeps_the_last_complete_one(small_disk, cache_dir):
    """Room for the base and one checkpoint: the second is refused before a byte is written, step-10 stays
    whole, and wandb (offline, on the same disk) does not flood the terminal."""
    run_dir = small_disk(2000) / "run"
    result = launch(*SMOKE, "--output-dir", str(run_dir), accelerate=False, env={"WANDB_MODE": "offline"})
    assert result.returncode == errors.EXIT_NO_SPACE, result.stderr[-3000:]
    [line] = error_lines(result)
    assert re.fullmatch(
        rf"emodist: error: no room on the disk of {re.escape(str(run_dir / 'checkpoints'))} for checkpoint step-20: "
        r"it needs about [\d.,]+ MiB \(the size of step-10\) and [\d.,]+ KiB are free; nothing was written, step-10 "
        r"is the last complete checkpoint: free some space, then resume with --resume auto", line), line
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-10"]
    assert checkpoints.unusable(run_dir / "checkpoints" / "step-10") is None
    assert_no_noise(result.stderr)


def test_a_bug_is_one_line_naming_the_file_that_holds_its_traceback(tmp_path, cache_dir):
    """An exception emodist does not expect (here injected into the loop) is reported as a bug: exit 70."""
    run_dir = tmp_path / "run"
    inject = ("import runpy, sys\nimport emodist.train.loop as loop\n"
              "def fit(session):\n    raise RuntimeError('an injected fault')\n"
              "loop.fit = fit\n"
              f"sys.argv = ['launch/train.py', *{SMOKE + ['--output-dir', str(run_dir), 'track.plots=false']!r}]\n"
              "runpy.run_path('launch/train.py', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", inject], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == errors.EXIT_INTERNAL, result.stderr[-3000:]
    [line] = error_lines(result)
    match = re.fullmatch(r"emodist: error: internal error, a bug in emodist rather than in your input \(RuntimeError: "
                         r"an injected fault\); its traceback is in (\S+)\. Please report it with that file "
                         r"\(EMODIST_DEBUG=1 prints the traceback here\)", line)
    assert match, line
    traceback = Path(match.group(1))
    assert traceback.parent == run_dir
    assert "Traceback (most recent call last)" in traceback.read_text()
    assert "RuntimeError: an injected fault" in traceback.read_text()
    assert "Traceback" not in result.stderr


CLOSE_PROBE = """
import json, signal, sys
from emodist import config
from emodist.report import tracking
from emodist.rundir.lock import LOCK
from emodist.runtime import errors, signals
import emodist.train.lifecycle as lifecycle
import emodist.train.loop as loop

where, run_dir = sys.argv[1], sys.argv[2]
seen = {"tracker_ended_with": []}

class Recording(tracking.Tracker):
    def finish(self, summary, files, exit_code):
        seen["tracker_ended_with"].append(exit_code)

def fault(*args, **kwargs):
    seen["lock_held_at_fault"] = (lifecycle_now.run_dir / LOCK).exists()
    raise (errors.Diverged if where == "fit" else errors.UsageError)(f"a fault injected into {where}")

tracking.start_wandb = lambda *args, **kwargs: Recording()
setattr(loop if where == "fit" else lifecycle, "fit" if where == "fit" else "build", fault)
cfg = config.load("distilbert", None, [f"output_dir={run_dir}", "train.max_steps=4"], smoke=True)
with signals.StopSignals(training=False) as stop:
    try:
        with lifecycle.Lifecycle(cfg, stop) as lifecycle_now:
            if lifecycle_now.setup():
                accelerator, logger = lifecycle_now.accelerator, lifecycle_now.session.logger
                lifecycle_now.fit()
    except errors.EmodistError as err:
        seen["raised"] = type(err).__name__
    # what close() let go of, looked at before the entry's own `with` restores anything
    seen["sigterm_handler_restored"] = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    seen["lock_released"] = not (lifecycle_now.run_dir / LOCK).exists()
    seen["accelerator_released"] = lifecycle_now.accelerator is None and lifecycle_now.session is None
    if where == "fit":
        seen["models_freed"] = accelerator._models == [] and accelerator._optimizers == []
        seen["metrics_file_closed"] = logger._file is None
print(json.dumps(seen))
"""


@pytest.mark.parametrize("where", ["setup", "fit"])
def test_close_lets_go_of_everything_the_run_holds_whatever_stops_it(where, tmp_path, cache_dir):
    """A fault in setup (the model's build, with the run directory locked) or in the loop: `Lifecycle.close`
    still ends the tracker with the run's exit code, restores the signal handlers, releases the lock and the
    accelerator's model and optimizer."""
    result = subprocess.run([sys.executable, "-c", CLOSE_PROBE, where, str(tmp_path / "run")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    expected = {"raised": "UsageError", "lock_held_at_fault": True, "sigterm_handler_restored": True,
                "lock_released": True, "accelerator_released": True, "tracker_ended_with": []}
    if where == "fit":  # the tracker starts once the loop state is built: only a fault in the loop reaches it
        expected |= {"raised": "Diverged", "tracker_ended_with": [errors.EXIT_DIVERGED], "models_freed": True,
                     "metrics_file_closed": True}
    assert seen == expected


def test_a_second_ctrl_c_stops_the_finish_and_says_how_to_finish_later(capfd):
    """The final evaluation and export ignored every Ctrl-C after the first, however long they took (a
    million threshold resamples ran on until SIGKILL)."""
    import signal

    from emodist.runtime import signals

    with signals.StopSignals(training=True) as stop:
        stop.finishing = True
        os.kill(os.getpid(), signal.SIGINT)  # the first: the finish goes on
        assert stop.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt) as second:
            os.kill(os.getpid(), signal.SIGINT)
    assert capfd.readouterr().err == ("emodist: received SIGINT: the training is done: finishing its evaluation and "
                                      "export first (a second Ctrl-C stops now, and --resume auto finishes later)\n")

    def finishing():
        raise second.value

    assert errors.run_main(finishing) == errors.EXIT_INTERRUPTED
    assert capfd.readouterr().err == ("emodist: interrupted (Ctrl-C) while finishing: the last checkpoint holds all of "
                                      "the training; the same command with --resume auto evaluates and exports it\n")


def test_a_full_disk_that_names_no_file_says_so_without_another_disk_s_free_space(capfd):
    """A write through an open file (a prediction, the tokenization cache) names no path: the message named 'a
    file', the free space of the working directory's disk, and an --output-dir that predict and export lack;
    tokenizers' own 'No space left' (a bare Exception) was an internal error."""
    import errno

    assert str(errors.no_space(OSError(errno.ENOSPC, "No space left on device"))) == (
        "no space left on a disk this command writes to: free some space, or write elsewhere, then run again")

    def writing():
        raise Exception("No space left on device (os error 28)")  # as tokenizers' save raises it

    assert errors.run_main(writing) == errors.EXIT_NO_SPACE
    assert capfd.readouterr().err.strip().splitlines()[-1] == (
        "emodist: error: no space left on a disk this command writes to: free some space, or write elsewhere, then "
        "run again")


def test_a_full_disk_while_tokenizing_or_exporting_names_the_cache_or_the_export(tmp_path, monkeypatch):
    """The tokenization cache's full disk read as an unnamed file's; an export's as an internal error (safetensors',
    tokenizers' and onnx's own errors), its partial files removed."""
    import errno

    import datasets
    from accelerate import PartialState

    from emodist import data
    from emodist.models import smoke_tokenizer
    from emodist.serve import export

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    synthetic = data.synthetic(0)
    monkeypatch.setattr(datasets.Dataset, "map", full)
    with pytest.raises(errors.NoSpace, match=rf"^no space left for the tokenization cache {re.escape(str(tmp_path))}"
                                             r"/tokenized \(.* free there\): free some space, or set data.cache_dir"):
        data.tokenize(synthetic, smoke_tokenizer(synthetic.splits["train"].texts), 16, str(tmp_path), PartialState())
    out = tmp_path / "exports" / "export"
    said = rf"^no space left on the disk of {re.escape(str(out.parent))} for the export: .* free there once its partial"
    with pytest.raises(errors.NoSpace, match=said), export.staged(out) as staged:
        (staged / "model.safetensors").write_bytes(b"part of it")
        raise Exception("No space left on device (os error 28)")
    assert list(out.parent.iterdir()) == []


def test_a_read_only_cache_without_the_run_s_tokens_tokenizes_them_in_memory(small_disk, tmp_path, capsys):
    """A shared cache mounted read-only: a cache miss failed with "<cache>/tokenized/tmpppv2udsn: Read-only file
    system" (a temporary file's name) and left the run directory behind (found by a new user)."""
    from accelerate import PartialState

    from emodist import data
    from emodist.models import smoke_tokenizer

    disk = small_disk(64)
    (disk / "tokenized").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    synthetic = data.synthetic(0)
    tokenizer = smoke_tokenizer(synthetic.splits["train"].texts)
    tokens = data.tokenize(synthetic, tokenizer, 16, str(disk), PartialState())
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("emodist:")] == [
        f"emodist: the tokenization cache {disk / 'tokenized'} is read-only and lacks this run's tokens: tokenizing "
        "in memory (set data.cache_dir to a writable directory to keep them)"]
    expected = data.tokenize(synthetic, tokenizer, 16, str(tmp_path / "cache"), PartialState())
    assert all(tokens[split][:] == expected[split][:] for split in ("train", "dev", "test"))
    assert list((disk / "tokenized").iterdir()) == []
    bare = small_disk(48)  # no tokenized/ in it either: it was refused, "cannot be created"
    subprocess.run(["mount", "-o", "remount,ro", str(bare)], check=True)
    tokens = data.tokenize(synthetic, tokenizer, 16, str(bare), PartialState())
    assert tokens["train"][:] == expected["train"][:] and list(bare.iterdir()) == []
    assert "is read-only and lacks this run's tokens: tokenizing in memory" in capsys.readouterr().err


def test_a_reader_of_the_output_that_goes_away_costs_the_printing_not_the_run(tmp_path, cache_dir):
    """`train.py ... | head` (or a `tee` ended by a hangup): rich ended the run with exit 1, no line and no
    checkpoint of the steps since the last one (found by a new user). Now the printing stops, the run does not."""
    from conftest import launch_command, read_summary

    run_dir = tmp_path / "run"
    command, environ = launch_command(*SMOKE, "--output-dir", str(run_dir), accelerate=True)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ)
    proc.stdout.read(200)  # the banner's first line, then the reader is gone
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=600) == 0, stderr[-3000:]
    assert ("emodist: warning: standard output is gone (the program that read it ended): the run goes on without "
            "printing; metrics.jsonl holds every record") in stderr
    assert read_summary(run_dir)["train"]["steps"] == 40 and (run_dir / "model" / "config.json").is_file()
    assert_no_noise(stderr)


def test_a_full_disk_under_the_output_costs_the_printing_not_the_run(tmp_path, cache_dir):
    """`train.py ... > log` with log's disk full (/dev/full here): the run stopped with "no space left on the disk
    of <the run>", whose disk had room, losing the steps since its checkpoint; a finished run exited 74 too."""
    from conftest import launch_command, read_summary

    run_dir = tmp_path / "run"
    command, environ = launch_command(*SMOKE, "--output-dir", str(run_dir), accelerate=False)
    with open("/dev/full", "w") as full:
        result = subprocess.run(command, cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True, env=environ,
                                timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("emodist: warning: standard output's file cannot grow (its disk is full or over quota): the run goes on "
            "without printing; metrics.jsonl holds every record") in result.stderr
    assert read_summary(run_dir)["train"]["steps"] == 40 and (run_dir / "model" / "config.json").is_file()
    assert_no_noise(result.stderr)


def test_a_plan_on_a_full_output_says_what_is_lost():
    """It said "the run goes on without printing; metrics.jsonl holds every record", of a plan."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, str(ROOT / "launch" / "plan.py"), "--variant", "distilbert"],
                                cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.splitlines() == ["emodist: warning: standard output's file cannot grow (its disk is full or "
                                          "over quota): the plan is not printed"]


def test_a_disk_that_fills_between_checkpoints_names_the_run_and_how_to_go_on(small_disk, cache_dir):
    """metrics.jsonl's write failed with "no space left on a disk this command writes to ... then run again", which
    named no directory and no checkpoint, and a plain run again is refused: the directory holds a run."""
    import time

    from conftest import launch_command

    run_dir = small_disk(8000) / "run"
    command, environ = launch_command(*SMOKE, "train.max_steps=2000", "train.log_every_steps=1", "--output-dir",
                                      str(run_dir), accelerate=False)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environ)
    while not (run_dir / "checkpoints" / "step-10" / checkpoints.STATE_FILE).exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    with open(run_dir.parent / "filler", "wb", buffering=0) as filler:  # the rest of the disk, as another job's would
        try:
            while True:
                filler.write(b"\0" * 65536)
        except OSError:
            pass
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == errors.EXIT_NO_SPACE, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"emodist: error: no space left on the disk of {re.escape(str(run_dir))}: step-\d+, the last "
                        r"complete checkpoint, is kept: free some space, then continue the run with the same command "
                        r"and --resume auto", line), line  # metrics.jsonl's write names no file
    assert_no_noise(stderr)
    assert not list(run_dir.glob("*.tmp"))  # no half-written temporary file left beside the run's files


def test_a_lock_the_full_disk_cut_short_is_not_left_behind(small_disk):
    """The lock's write failed after its creation: the empty .emodist-lock read as "in use by another emodist
    launch (a lock being written)" for a minute after the space was freed (found by a new user)."""
    from emodist.rundir.lock import LOCK, RunLock

    disk = small_disk(64)
    (disk / "run").mkdir()
    with open(disk / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass
    with pytest.raises(errors.NoSpace) as full:
        RunLock.acquire(disk / "run")
    assert str(full.value) == (f"no space left on the disk of {disk / 'run'} for its lock ({LOCK}): nothing was "
                               "started; free some space, then run the same command again")
    assert not (disk / "run" / LOCK).exists()
    (disk / "filler").unlink()
    RunLock.acquire(disk / "run").release()


def test_a_disk_too_small_for_the_smoke_base_stops_the_start_with_one_line_and_nothing_left(small_disk, cache_dir):
    """safetensors' "No space left on device" was an internal error, and smoke-base.tmp and the run directory
    stayed (found by a new user)."""
    disk = small_disk(200)
    result = launch(*SMOKE, "--output-dir", str(disk / "run"), accelerate=False)
    assert result.returncode == errors.EXIT_NO_SPACE, result.stderr[-3000:]
    assert error_lines(result) == [f"emodist: error: no space left on the disk of {disk / 'run'} for the smoke base "
                                   "(smoke-base): free some space, or choose another --output-dir, then run again"]
    assert list(disk.iterdir()) == []  # the start's directory removed with what it held
    assert_no_noise(result.stderr)
