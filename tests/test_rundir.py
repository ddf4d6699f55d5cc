"""Never lose a run: what every way of starting does with a run directory that already holds something.

Each refusal asserts that no file of the directory changed (a snapshot of every file's hash, before and
after). Refusals run launch/train.py's `main` in this process (they end before any training); the runs
that train go through the real launcher in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, launch, read_metrics, read_summary, snapshot, train_in_process

from emodist.rundir import checkpoints, contract
from emodist.runtime import errors, files

SMOKE = ["--variant", "distilbert", "--smoke"]
SHORT = ["train.max_steps=20", "train.save_every_steps=10", "train.log_every_steps=5"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir) -> Path:
    """A finished smoke run (20 steps, checkpoints at steps 10 and 20), tracked by an offline wandb run."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = launch(*SMOKE, "--output-dir", str(run_dir), *SHORT, accelerate=False, env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    return run_dir


def refusal(code: int, stderr: str) -> str:
    """The one error line of a refusal (exit code 2)."""
    lines = [line for line in stderr.splitlines() if line.startswith("emodist: error:")]
    assert code == errors.EXIT_USAGE and len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_resume_auto_leaves_a_finished_run_as_it_is(run_copy):
    """It used to start afresh when no checkpoint was complete, deleting summary.json, model/ and metrics.jsonl."""
    shutil.rmtree(run_copy / "checkpoints")
    before = snapshot(run_copy)
    code, stdout, _ = train_in_process(*SMOKE, "--output-dir", str(run_copy), *SHORT, "--resume", "auto")
    assert code == 0 and f"emodist: {run_copy} has already finished (summary.json): nothing to do" in stdout
    assert snapshot(run_copy) == before

    line = refusal(*train_in_process(*SMOKE, "--output-dir", str(run_copy), *SHORT, "train.max_steps=30",
                                     "--resume", "auto")[::2])
    assert line == (f"emodist: error: --resume auto: {run_copy} holds a finished run and no complete checkpoint to "
                    "train on from: leave train.epochs / train.max_steps as they were, or start a new run in a new "
                    "--output-dir (nothing was changed)")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("how", [["--resume", "auto"], [], ["--overwrite"]])
def test_no_way_of_starting_writes_into_a_directory_of_user_files(tmp_path, cache_dir, how):
    """The user's model/ and config.yaml used to be deleted by --resume auto and overwritten by a plain start."""
    mine = tmp_path / "mine"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "weights.bin").write_bytes(b"months of work")
    (mine / "config.yaml").write_text("my: settings\n")
    before = snapshot(mine)
    line = refusal(*train_in_process(*SMOKE, "--output-dir", str(mine), *SHORT, *how)[::2])
    assert line == (f"emodist: error: --output-dir {mine} holds files emodist did not write (config.yaml, model): "
                    "choose a new or empty --output-dir (nothing there was changed)")
    assert snapshot(mine) == before


def test_resuming_a_checkpoint_into_another_run_is_refused_and_into_a_new_directory_forks(finished, run_copy, tmp_path):
    """It used to overwrite the other run without --overwrite and mix the two runs' metrics.jsonl."""
    before, source = snapshot(run_copy), snapshot(finished)
    checkpoint = finished / "checkpoints" / "step-10"
    line = refusal(*train_in_process(*SMOKE, "--output-dir", str(run_copy), *SHORT, "--resume", str(checkpoint))[::2])
    assert line.startswith(f"emodist: error: --resume {checkpoint} starts a new run in --output-dir {run_copy}, which "
                           "already holds ")
    assert line.endswith("choose a new or empty --output-dir, or pass --overwrite to move that aside")
    assert snapshot(run_copy) == before

    fork = tmp_path / "fork"
    result = launch(*SMOKE, "--output-dir", str(fork), *SHORT, "train.max_steps=30", "--resume", str(checkpoint),
                    accelerate=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(finished) == source
    steps = [r["step"] for r in read_metrics(fork) if "train/loss" in r]
    assert steps == [5, 10, 15, 20, 25, 30]  # the source's history up to step 10, then the fork's own
    assert [r for r in read_metrics(fork) if r["step"] <= 10] == [r for r in read_metrics(finished) if r["step"] <= 10]
    assert read_summary(fork)["train"]["steps"] == 30


def test_resuming_a_checkpoint_into_its_own_run_rewinds_it_and_keeps_the_summary_it_replaces(finished, run_copy):
    """--resume PATH into its own run directory: the run goes back to that step and trains on to the same end
    (exact resume: the same losses), its history after the step replaced; the old summary is kept aside."""
    old_summary = (run_copy / "summary.json").read_text()
    old_step_20 = (run_copy / "checkpoints" / "step-20" / checkpoints.STATE_FILE).read_bytes()
    result = launch(*SMOKE, "--output-dir", str(run_copy), *SHORT, "--resume",
                    str(run_copy / "checkpoints" / "step-10"), accelerate=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_copy / "summary.step-20.json").read_text() == old_summary
    # the old step-20 was deleted by the new one's save; a later checkpoint outnumbering the new ones deleted
    # each new checkpoint in the save that wrote it, and `--resume auto` continued from the old steps
    [aside] = (run_copy / "checkpoints").glob("superseded-*")
    assert (aside / "step-20" / checkpoints.STATE_FILE).read_bytes() == old_step_20
    assert (f"emodist: the checkpoints after step 10 (step-20) belong to steps this run leaves behind: moved to "
            f"{aside}, which nothing reads (to go back to them, stop this run and move them back into checkpoints/); "
            "delete it when you no longer need them") in " ".join(result.stdout.split())
    assert checkpoints.latest_checkpoint(run_copy)[0] == run_copy / "checkpoints" / "step-20"
    losses = {r["step"]: r["train/loss"] for r in read_metrics(run_copy) if "train/loss" in r}
    assert losses == {r["step"]: r["train/loss"] for r in read_metrics(finished) if "train/loss" in r}
    assert list(losses) == [5, 10, 15, 20]
    summary = read_summary(run_copy)
    assert summary["train"]["steps"] == 20 and summary["perf"]["sessions"] == 2


@pytest.mark.slow  # kept out of CI's 25 minutes; `pytest` runs it
def test_a_resume_in_another_precision_says_so_and_the_summary_names_both(finished, run_copy):
    """A resume may change train.mixed_precision (`auto` on another GPU, or an override); summary.json named only
    the last session's, for a run that trained most of its steps in the other (found by a new user)."""
    first = read_summary(finished)["mixed_precision"]
    other = "no" if first == "bf16" else "bf16"
    result = launch(*SMOKE, "--output-dir", str(run_copy), *SHORT, f"train.mixed_precision={other}", "--resume",
                    str(run_copy / "checkpoints" / "step-10"), accelerate=False)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = {"no": "fp32"}
    assert (f"emodist: warning: {run_copy / 'checkpoints' / 'step-10'} trained in {shown.get(first, first)}, this "
            f"session trains in {shown.get(other, other)}: the run's steps mix precisions (summary.json says "
            f"{first}+{other}); set train.mixed_precision={first} to keep one") in " ".join(
                result.stdout.split())
    assert read_summary(run_copy)["mixed_precision"] == f"{first}+{other}"
    assert checkpoints.read_state(run_copy / "checkpoints" / "step-20")["precisions"] == [first, other]


def test_resuming_at_the_last_step_has_nothing_to_train_and_changes_nothing(finished, run_copy, tmp_path):
    """A finished run, or a fork that would only evaluate, used to be finished again: a summary with NaN loss and
    zero throughput, metrics logged twice. (A run killed while it finished does finish: the test below.)"""
    before = snapshot(run_copy)
    last = run_copy / "checkpoints" / "step-20"
    for target in (run_copy, tmp_path / "fork"):  # the run itself, and a fork that would only evaluate
        line = refusal(*train_in_process(*SMOKE, "--output-dir", str(target), *SHORT, "--resume", str(last))[::2])
        assert line == (f"emodist: error: --resume {last}: nothing left to train: it is at step 20 and this run ends "
                        "at step 20 (train.epochs=8, train.max_steps=20): raise train.max_steps or train.epochs to "
                        "train further (nothing was changed)")
    assert snapshot(run_copy) == before
    shutil.copytree(last, run_copy / "checkpoints" / ".step-30.tmp")  # a save that never finished
    line = refusal(*train_in_process(*SMOKE, "--output-dir", str(run_copy), "--resume",
                                     str(run_copy / "checkpoints" / ".step-30.tmp"))[::2])
    assert "not a checkpoint directory (expected <run>/checkpoints/step-N)" in line


def test_a_run_killed_while_it_finished_finishes_on_resume_auto(finished, run_copy):
    """Killed after its last checkpoint, before summary.json (the final evaluation, thresholds and export),
    `--resume auto` used to refuse it for good ("nothing left to train"): a requeued job could never end.
    It now only finishes, with the scores and throughput of the uninterrupted run and no record twice."""
    for name in ("summary.json", "model", "thresholds.json"):
        path = run_copy / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    result = launch(*SMOKE, "--output-dir", str(run_copy), *SHORT, "--resume", "auto", accelerate=False,
                    env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert ": the run's last step, so it only finishes (evaluation, thresholds, model)" in result.stdout
    again, whole = read_summary(run_copy), read_summary(finished)
    for key in ("test_tuned", "dev_tuned"):
        assert again[key] == whole[key], key
    finish = {"finished": None}  # the step and time of the finish that wrote them: this one's own
    assert {**again["thresholds"], **finish} == {**whole["thresholds"], **finish}
    assert again["thresholds"]["finished"].startswith("step 20, ")
    assert again["train"] == whole["train"] and again["perf"]["sessions"] == 2
    assert again["perf"]["train_samples_per_s"] == pytest.approx(whole["perf"]["train_samples_per_s"], rel=1e-3)
    assert read_metrics(run_copy) == read_metrics(finished)
    assert (run_copy / "model" / "config.json").is_file()


def test_a_killed_run_shortened_to_a_checkpoint_s_step_is_not_finished_as_if_it_ended_there(run_copy):
    """step-10 of a 20-step plan (its learning rate halfway down) is not the end of a 10-step run."""
    for name in ("summary.json", "model", "thresholds.json", "checkpoints/step-20"):
        path = run_copy / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    before = snapshot(run_copy)
    line = refusal(*train_in_process(*SMOKE, "--output-dir", str(run_copy), *SHORT, "train.max_steps=10", "--resume",
                                     "auto")[::2])
    assert line.startswith(f"emodist: error: --resume {run_copy / 'checkpoints' / 'step-10'}: nothing left to train: "
                           "it is at step 10 and this run ends at step 10")
    assert snapshot(run_copy) == before


def test_a_run_killed_in_its_first_save_starts_again_on_resume_auto(tmp_path, cache_dir):
    """Only checkpoints/.step-N.tmp of a save that never finished: nothing of value, so it starts over
    instead of refusing with "no complete checkpoint ... and it holds checkpoints"."""
    run_dir = tmp_path / "run"
    args = [*SMOKE, "--output-dir", str(run_dir), "train.max_steps=2", "train.save_every_steps=1"]
    first = launch(*args, accelerate=False)
    assert first.returncode == 0, first.stderr[-3000:]
    for name in ("summary.json", "model", "thresholds.json", "checkpoints/step-2"):
        shutil.rmtree(run_dir / name) if (run_dir / name).is_dir() else (run_dir / name).unlink()
    (run_dir / "checkpoints" / "step-1").rename(run_dir / "checkpoints" / ".step-1.tmp")
    (run_dir / "checkpoints" / ".step-7.tmp").mkdir()  # of a plan that saved at other steps
    again = launch(*args, "--resume", "auto", accelerate=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"emodist: {run_dir} stopped before its first checkpoint: starting it again from step 0" in again.stdout
    assert read_summary(run_dir)["train"]["steps"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-1", "step-2"]  # the partial saves gone


def test_a_corrupt_checkpoint_is_skipped_in_one_line_and_the_run_goes_on_from_the_one_before(run_copy):
    """A same-size corrupt model.safetensors used to pass, delete summary.json, then crash on its header."""
    weights = run_copy / "checkpoints" / "step-20" / "model.safetensors"
    corrupt = bytearray(weights.read_bytes())
    corrupt[100:108] = b"\xff" * 8  # the size stays the same
    weights.write_bytes(bytes(corrupt))
    for exported in ("export", "export-onnx"):  # the 20-step model, exported (the files do not matter here)
        (run_copy / exported).mkdir()
    (run_copy / "model" / "NOTES.md").write_text("mine")  # a user's files in model/ were deleted by the new export
    (run_copy / "model" / "predicted").mkdir()
    (run_copy / "model" / "embeddings.bin").write_bytes(b"mine")  # named like weights, and no model's
    before = sorted(p.name for p in (run_copy / "model").iterdir())
    result = launch(*SMOKE, "--output-dir", str(run_copy), *SHORT, "train.max_steps=30", "--resume", "auto",
                    accelerate=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_copy / "model" / "NOTES.md").read_text() == "mine" and (run_copy / "model" / "predicted").is_dir()
    assert (run_copy / "model" / "embeddings.bin").read_bytes() == b"mine"
    # the same names, the model's replaced and the user's kept, and no staging directory left beside it
    assert sorted(p.name for p in (run_copy / "model").iterdir()) == before
    assert not (run_copy / "model.tmp").exists()
    assert (f"emodist: note: kept NOTES.md, embeddings.bin, predicted in {run_copy / 'model'}: files emodist did not "
            "write, from before this finish") in " ".join(result.stdout.split())
    assert json.loads((run_copy / "model" / "thresholds.json").read_text()) == json.loads(
        (run_copy / "thresholds.json").read_text())  # the new finish's, not carried over
    assert (f"emodist: note: export, export-onnx hold the model of an earlier finish of this run, not this one: "
            f"delete them and export again (launch/export.py {run_copy})") in " ".join(result.stdout.split())
    assert (f"emodist: skipped checkpoint {weights.parent}: model.safetensors does not match the hash taken when it "
            "was saved (corrupted or changed since)") in result.stdout
    assert f"resumed from {run_copy / 'checkpoints' / 'step-10'} at step 10" in result.stdout
    [aside] = (run_copy / "checkpoints").glob("superseded-*")  # the corrupt one, kept for a look, read by nothing
    assert (aside / "step-20" / "model.safetensors").read_bytes() == bytes(corrupt)
    assert {"step-20", "step-30", aside.name} <= {p.name for p in (run_copy / "checkpoints").iterdir()}
    assert read_summary(run_copy)["train"]["steps"] == 30
    assert json.loads((run_copy / "summary.step-20.json").read_text())["train"]["steps"] == 20  # kept, renamed


def test_nothing_of_the_run_changes_before_its_checkpoint_has_loaded(run_copy):
    """A checkpoint whose files verify but do not fit the model is refused with the run untouched."""
    import torch
    from safetensors.torch import save_file

    checkpoint = run_copy / "checkpoints" / "step-20"
    save_file({"something.else": torch.zeros(3)}, str(checkpoint / "model.safetensors"))
    state = checkpoints.read_state(checkpoint)
    state["files"]["model.safetensors"] = checkpoints._describe_file(checkpoint / "model.safetensors")
    files.write_json(checkpoint / "state.json", {**state, "digest": checkpoints._digest(state)})
    assert checkpoints.unusable(checkpoint) is None
    before = snapshot(run_copy)
    code, _, stderr = train_in_process(*SMOKE, "--output-dir", str(run_copy), *SHORT, "train.max_steps=30",
                                       "--resume", "auto")
    line = refusal(code, stderr)
    assert line.startswith(f"emodist: error: --resume {checkpoint}: it does not load into this model (")
    assert "nothing of the run was changed" in line
    assert snapshot(run_copy) == before


def test_overwrite_moves_the_whole_run_aside_and_starts_a_new_wandb_run(run_copy):
    """--overwrite used to leave export/, thresholds.json and plots/ behind and log into the old wandb run."""
    (run_copy / "export").mkdir()
    (run_copy / "export" / "README.md").write_text("an export of the old run")
    (run_copy / "plots").mkdir()
    (run_copy / "plots" / "curves.png").write_bytes(b"old")
    before = snapshot(run_copy)
    old_id = json.loads((run_copy / "wandb" / "emodist-run.json").read_text())["id"]
    result = launch(*SMOKE, "--output-dir", str(run_copy), *SHORT, "--overwrite", accelerate=False,
                    env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    [aside] = run_copy.parent.glob("run.replaced-*")
    assert f"emodist: moved the run that was in {run_copy} to {aside} (--overwrite)" in result.stdout
    assert snapshot(aside) == before
    assert not (run_copy / "export").exists() and not (run_copy / "plots").exists()
    assert json.loads((run_copy / "wandb" / "emodist-run.json").read_text())["id"] != old_id
    assert read_summary(run_copy)["train"]["steps"] == 20


def test_a_second_launch_into_a_run_directory_in_use_is_refused_in_one_line(tmp_path, cache_dir):
    """Both used to write, and the second crashed mid-way (a requeued job while the old one still runs)."""
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(ROOT / "launch" / "train.py"), *SMOKE, "--output-dir", str(run_dir),
                              "train.max_steps=100000", "track.plots=false"], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-3000:]
            time.sleep(0.1)
        line = refusal(*train_in_process(*SMOKE, "--output-dir", str(run_dir), "--resume", "auto")[::2])
        assert line.startswith(f"emodist: error: --output-dir {run_dir} is in use by another emodist launch "
                               f"(pid {first.pid} on ")
        assert line.endswith(f"wait for it to end, or choose another --output-dir (if you are sure that none runs, "
                             f"delete {run_dir / '.emodist-lock'})")
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == errors.EXIT_PREEMPTED
    stderr = first.stderr.read()
    assert "emodist: received SIGTERM: stopping at the next step boundary, after saving a checkpoint" in stderr
    assert f"to continue, run the same command with --output-dir {run_dir} --resume auto" in stderr
    assert not (run_dir / ".emodist-lock").exists()  # released by the stop


@pytest.mark.parametrize("kind", ["file", "read-only", "dangling link"])
def test_an_output_dir_that_cannot_be_written_is_one_line(tmp_path, cache_dir, read_only_dir, kind):
    target = {"file": tmp_path / "a-file", "read-only": read_only_dir / "run", "dangling link": tmp_path / "link"}[kind]
    if kind == "file":
        target.write_text("not a directory")
    if kind == "dangling link":  # it read "cannot create it (File exists)"
        target.symlink_to(tmp_path / "gone")
    line = refusal(*train_in_process(*SMOKE, "--output-dir", str(target), *SHORT)[::2])
    expected = {"file": f"--output-dir {target} is a file, not a directory: choose a directory",
                "read-only": f"--output-dir {target}: cannot create it (Read-only file system): choose a writable "
                             "--output-dir",
                "dangling link": f"--output-dir {target} is a link to {tmp_path / 'gone'}, which does not exist: create "
                                 "that directory, or choose another --output-dir"}[kind]
    assert line == f"emodist: error: {expected}"


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory on a read-only file system (a tmpfs mounted read-only: root may write anywhere else)."""
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o555)
        yield target
        target.chmod(0o755)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(target)], check=True)
    yield target
    subprocess.run(["umount", str(target)], check=True)


# ---------------------------------------------------------------------------------------------------
# Checkpoint integrity, without a launch


def edited(checkpoint: Path, change) -> Path:
    state = checkpoints.read_state(checkpoint)
    change(state)
    (checkpoint / "state.json").write_text(json.dumps(state))
    return checkpoint


@pytest.mark.parametrize(("change", "reason"), [
    (lambda s: s["files"]["optimizer.bin"].update(size=1), "its state.json was changed after the save"),
    (lambda s: s.update(step=99), "its state.json was changed after the save"),
    (lambda s: s.pop("fingerprint"), "its state.json lacks fingerprint (written by an older emodist, or not by emodist)"),
    (lambda s: s.pop("digest"), "its state.json lacks digest"),
])
def test_an_edited_state_json_makes_its_checkpoint_unusable(run_copy, change, reason):
    checkpoint = edited(run_copy / "checkpoints" / "step-20", change)
    assert checkpoints.unusable(checkpoint).startswith(reason)
    assert checkpoints.latest_checkpoint(run_copy)[0] == run_copy / "checkpoints" / "step-10"


def test_a_state_json_that_is_not_json_is_a_reason_not_a_traceback(run_copy):
    checkpoint = run_copy / "checkpoints" / "step-20"
    (checkpoint / "state.json").write_text("{not json")
    assert checkpoints.unusable(checkpoint) == "its state.json does not read (JSONDecodeError)"
    (checkpoint / "state.json").write_text("[]")
    assert checkpoints.unusable(checkpoint).startswith("its state.json lacks step, epoch, batches_in_epoch")


# ---------------------------------------------------------------------------------------------------
# The lock


def write_lock(run_dir: Path, age_s: float = 0, **holder) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".emodist-lock"
    path.write_text(json.dumps({"token": "theirs", "host": "node7", "pid": 1, "pid_started": 0.0,
                                "started": "2026-01-01T00:00:00", "slurm_job_id": None,
                                "slurm_restart_count": "0", **holder}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_a_lock_held_on_another_host_is_respected_until_its_heartbeat_stops(tmp_path):
    write_lock(tmp_path / "run", age_s=60)
    with pytest.raises(errors.UsageError, match=r"is in use by another emodist launch \(pid 1 on node7, since "):
        contract.RunLock.acquire(tmp_path / "run")
    write_lock(tmp_path / "run", age_s=contract.RunLock.STALE_S + 60)
    notices = []
    lock = contract.RunLock.acquire(tmp_path / "run", notify=notices.append)
    assert notices == [f"emodist: took over the lock of {tmp_path / 'run'}: its holder on node7 has not been seen "
                       "for 6 minutes"]
    lock.release()
    assert not (tmp_path / "run" / ".emodist-lock").exists()


def test_a_lock_of_an_ended_process_on_this_host_is_taken_over(tmp_path):
    import socket

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_lock(tmp_path / "run", host=socket.gethostname(), pid=int(ended.stdout))
    notices = []
    contract.RunLock.acquire(tmp_path / "run", notify=notices.append).release()
    assert notices == [f"emodist: took over the lock of {tmp_path / 'run'}: its process {int(ended.stdout)} on this "
                       "host has ended"]


def test_a_requeued_slurm_job_takes_over_the_lock_of_its_earlier_run(tmp_path, monkeypatch):
    write_lock(tmp_path / "run", slurm_job_id="4242", slurm_restart_count="0")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    with pytest.raises(errors.UsageError, match="SLURM job 4242"):  # the same run of the job: still running
        contract.RunLock.acquire(tmp_path / "run")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    notices = []
    contract.RunLock.acquire(tmp_path / "run", notify=notices.append).release()
    assert notices == [f"emodist: took over the lock of {tmp_path / 'run'}: it was held by an earlier run of SLURM "
                       "job 4242, which SLURM ended before requeueing it"]


def test_a_lock_being_written_is_respected_for_a_minute(tmp_path):
    path = write_lock(tmp_path / "run")
    path.write_text("")
    with pytest.raises(errors.UsageError, match=r"in use by another emodist launch \(a lock being written\)"):
        contract.RunLock.acquire(tmp_path / "run")
    os.utime(path, (time.time() - 120, time.time() - 120))
    contract.RunLock.acquire(tmp_path / "run", notify=lambda _: None).release()


def test_a_live_lock_is_never_released_by_another_holder(tmp_path):
    mine = contract.RunLock.acquire(tmp_path / "run")
    try:
        path = tmp_path / "run" / ".emodist-lock"
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["token"] == mine.token
        other = contract.RunLock(path, token="someone else")  # a release by a holder of another token
        other.release()
        assert path.exists()
    finally:
        mine.release()
    assert not path.exists()


@pytest.mark.slow  # kept out of CI's 25 minutes; `pytest` runs it
def test_a_lora_run_resumes_on_its_base_and_is_refused_on_other_base_weights(finished, tmp_path):
    """A LoRA checkpoint holds the adapters only: on a base written over since, it trained on without a word."""
    base = tmp_path / "base"
    shutil.copytree(finished / "smoke-base", base)
    run_dir = tmp_path / "lora"
    lora = ["--variant", "distilbert", f"model.name_or_path={base}", "model.method=lora",
            "model.lora.target_modules=[q_lin,v_lin]", "data.dataset=synthetic", "--output-dir", str(run_dir),
            "train.save_every_steps=10", "train.log_every_steps=5"]
    assert launch(*lora, "train.max_steps=20", accelerate=False).returncode == 0
    on = launch(*lora, "train.max_steps=30", "--resume", "auto", accelerate=False)  # the same base: it trains on
    assert on.returncode == 0 and read_summary(run_dir)["train"]["steps"] == 30, on.stderr[-3000:]
    weights = base / "model.safetensors"
    content = bytearray(weights.read_bytes())
    content[-64:] = bytes(64)  # the last weights' bytes: the same size, another model
    weights.write_bytes(bytes(content))
    before = snapshot(run_dir)
    line = refusal(*train_in_process(*lora, "train.max_steps=40", "--resume", "auto")[::2])
    assert line == (f"emodist: error: --resume auto: {run_dir / 'checkpoints' / 'step-30'} holds LoRA adapters trained "
                    f"on other base weights than {base} has now (a new hub snapshot, or files written over): resume on "
                    "the base it trained on (model.name_or_path=its directory), or start a new run in a new --output-dir")
    assert snapshot(run_dir) == before


@pytest.mark.slow  # kept out of CI's 25 minutes; `pytest` runs it
def test_a_fork_killed_before_its_first_checkpoint_starts_again_from_what_it_forked(finished, tmp_path):
    """Its fork command was refused (the copied history counted as trained) and --resume auto started a new run
    from step 0, the fork lost without a word but one line (found by a new user)."""
    source = finished / "checkpoints" / "step-10"

    def killed_fork(fork: Path) -> list[str]:
        fork_args = [*SMOKE, "--output-dir", str(fork), "train.save_every_steps=1000", "train.log_every_steps=1",
                     "--resume", str(source)]
        proc = subprocess.Popen([sys.executable, str(ROOT / "launch" / "train.py"), *fork_args, "train.max_steps=4000",
                                 "track.plots=false"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while not ((fork / "metrics.jsonl").exists() and any(r["step"] > 12 for r in read_metrics(fork))):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # two steps past the source's 10, none saved yet
        proc.wait()
        assert not list(fork.glob("checkpoints/step-*"))
        return fork_args

    for how in ("the fork command", "--resume auto"):
        fork = tmp_path / how.replace(" ", "-")
        fork_args = killed_fork(fork)
        again = fork_args if how == "the fork command" else [*fork_args[:-2], "--resume", "auto"]
        result = launch(*again, "train.max_steps=20", accelerate=False)
        assert result.returncode == 0, result.stderr[-3000:]
        if how == "--resume auto":
            assert (f"emodist: {fork} stopped before its first checkpoint: starting it again from {source}, its "
                    "source") in " ".join(result.stdout.split())
        assert f"resumed from {source} at step 10" in " ".join(result.stdout.split())
        assert read_summary(fork)["train"]["steps"] == 20
        assert [r for r in read_metrics(fork) if r["step"] <= 10] == [r for r in read_metrics(finished) if r["step"] <= 10]
    # killed while its checkpoint loaded (no config.yaml yet), and its source gone since (found by review): the
    # first was refused for want of a config.yaml; the second started from step 0, the copied history deleted
    loading = tmp_path / "loading"
    loading.mkdir()
    (loading / ".emodist-run").write_text(json.dumps({"emodist_run": 1, "fork_of": str(source)}))
    auto = [*SMOKE, "--output-dir", str(loading), "--resume", "auto", "train.max_steps=20"]
    assert f"starting it again from {source}, its source" in " ".join(train_in_process(*auto)[1].split())
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / ".emodist-run").write_text(json.dumps({"emodist_run": 1, "fork_of": str(tmp_path / "nowhere" / "step-10")}))
    (gone / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.7}\n')
    before = snapshot(gone)
    line = refusal(*train_in_process(*SMOKE, "--output-dir", str(gone), "--resume", "auto")[::2])
    assert line.startswith(f"emodist: error: --resume auto: {gone} is a fork of {tmp_path / 'nowhere' / 'step-10'}, "
                           "stopped before its first checkpoint, and that checkpoint cannot be read (")
    assert line.endswith("): nothing was changed; fork another checkpoint (--resume PATH), or pass --overwrite to "
                         "start afresh")
    assert snapshot(gone) == before


def test_a_run_directory_moved_while_it_trains_stops_the_run_instead_of_splitting_it(tmp_path, cache_dir):
    """`mv runs/a runs/a-old` during training: the next save made runs/a again and went on there, and a new run
    started at runs/a was mixed with it (its checkpoints replaced, its summary written over; found by a new user)."""
    from conftest import launch_command

    run_dir, moved = tmp_path / "a", tmp_path / "a-old"
    command, environ = launch_command(*SMOKE, "--output-dir", str(run_dir), "train.max_steps=2000",
                                      "train.epochs=1000", "train.save_every_steps=20", "train.eval_every_steps=1000",
                                      accelerate=False)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "step-20").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    run_dir.rename(moved)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == errors.EXIT_USAGE, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("emodist: error:")]
    assert line.startswith(f"emodist: error: {run_dir}: it is gone (moved, renamed or deleted) while this run "
                           "trained: it stops at step ")
    assert line.endswith("and writes nothing more there (the steps since its last checkpoint are lost): continue it "
                         "where its directory is now, with --output-dir naming it and --resume auto")
    assert not run_dir.exists()  # not made again
    assert (moved / "checkpoints" / "step-20" / "state.json").is_file() and not (moved / "summary.json").exists()


def test_a_lock_says_when_its_directory_is_no_longer_its_launch_s(tmp_path):
    lock = contract.RunLock.acquire(tmp_path / "a", notify=lambda line: None)
    try:
        assert lock.lost() is None
        import errno
        from unittest import mock

        stale = OSError(errno.ESTALE, "Stale file handle")  # NFS, or no file descriptor left: not taken for a move
        with mock.patch.object(Path, "read_text", side_effect=stale):
            assert lock.lost() is None
        (tmp_path / "a").rename(tmp_path / "a-old")
        assert lock.lost() == "it is gone (moved, renamed or deleted)"
        (tmp_path / "a").mkdir()  # something else made there since
        assert lock.lost() == "its lock (.emodist-lock) is gone: the directory was moved, renamed or replaced"
        other = contract.RunLock.acquire(tmp_path / "a", notify=lambda line: None)  # a new run started there
        assert lock.lost().startswith(f"another launch holds it now (pid {os.getpid()} on ")
        other.release()
    finally:
        lock.release()
    assert (tmp_path / "a-old" / ".emodist-lock").exists()  # not its path any more: left for a resume to take over


def test_a_local_base_is_recorded_wherever_it_is_read_from_and_resumes_however_it_is_named(finished, tmp_path):
    """A base named relatively was written so into config.yaml: run from elsewhere, `bases/x` read as a hub id; and
    the same base named another way (`./x`, `x/`, its full path) was refused as other settings on resume."""
    import yaml
    from conftest import launch_command

    base, run_dir = tmp_path / "base", tmp_path / "run"
    shutil.copytree(finished / "smoke-base", base)
    args = ["--variant", "distilbert", "data.dataset=synthetic", "--output-dir", str(run_dir), "train.save_every_steps=10"]
    first = launch(*args, f"model.name_or_path={os.path.relpath(base, ROOT)}", "train.max_steps=10", accelerate=False)
    assert first.returncode == 0, first.stderr[-3000:]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["name_or_path"] == str(base)
    command, environ = launch_command(*args, "model.name_or_path=./base/", "train.max_steps=20", "--resume", "auto",
                                      accelerate=False)
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=environ, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_summary(run_dir)["train"]["steps"] == 20


def test_a_base_named_two_ways_is_one_base_to_a_resume(tmp_path, monkeypatch):
    """Checkpoints saved before bases were recorded by their full path name them as they were given."""
    from emodist.rundir.fingerprint import BASE_KEY, differences

    (tmp_path / "bases" / "x").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    name = "model.name_or_path"
    assert differences({name: "bases/x"}, {name: str(tmp_path / "bases" / "x")}) == ""
    assert differences({name: "bases/x"}, {name: "./bases/x/"}) == ""
    assert differences({name: "bases/x"}, {name: "other"}) == f'{name}="bases/x" there, "other" here'
    same = {BASE_KEY: "abc"}  # weights identified alike (a sample of them): not enough to take two bases for one
    assert differences({name: "/gone/x", **same}, {name: "other", **same}) == f'{name}="/gone/x" there, "other" here'
