"""The run directory's safety checks, in this process: what each way of starting decides for a directory
built by hand, what it says, and that a refusal changes nothing. (tests/test_rundir.py tries the same
through real launches, on directories real runs left.)"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from conftest import snapshot
from test_checkpointing import TOPOLOGY, make_checkpoint

from emodist import config
from emodist.rundir import contract, timeline
from emodist.rundir import fingerprint as fingerprints
from emodist.rundir.contract import MARKER, Contents
from emodist.runtime import files
from emodist.runtime.errors import UsageError

LABELS = ["joy", "anger"]


def settings(path: Path | None, *overrides: str):
    return config.load("distilbert", smoke=True, overrides=[*( [f"output_dir={path}"] if path else []), *overrides])


def start(path: Path | None, resume: str = "none", overwrite: bool = False, *overrides: str) -> tuple[contract.Run, list]:
    """rundir's decision for `path` (the lock released at once), and what it said."""
    said = []
    run = contract._open(settings(path, *overrides), LABELS, TOPOLOGY, overwrite, resume, said.append)
    run.close()
    assert path is None or run.path == path
    return run, said


def refused(path: Path | None, resume: str = "none", overwrite: bool = False, *overrides: str) -> str:
    """The refusal of starting on `path`, checked to leave every file of its parent as it was."""
    root = path.parent if path else Path.cwd()
    before = snapshot(root)
    with pytest.raises(UsageError) as error:
        start(path, resume, overwrite, *overrides)
    assert snapshot(root) == before
    return str(error.value)


def a_run(path: Path, *, saved=(), finished: bool = False, steps: int = 512, **files: str) -> Path:
    """A run directory as emodist leaves it: config.yaml, the marker, metrics, checkpoints, maybe a summary."""
    path.mkdir(parents=True)
    config.dump(settings(path), path / "config.yaml")
    (path / MARKER).write_text('{"emodist_run": 1}\n')
    (path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.7}\n')
    for step in saved:
        make_checkpoint(path, step, fingerprint=fingerprints.fingerprint(settings(path), LABELS))
    if finished:
        (path / "summary.json").write_text(json.dumps({"train": {"steps": steps}}))
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_a_new_directory_is_made_marked_and_given_the_config(tmp_path):
    run, said = start(tmp_path / "new")
    assert (run.path, run.checkpoint, run.finished, said) == (tmp_path / "new", None, False, [])
    assert sorted(p.name for p in run.path.iterdir()) == [MARKER, "config.yaml"]  # the lock is gone with close()
    assert config.load(config_file=str(run.path / "config.yaml")).to_dict() == {**settings(None).to_dict(), "output_dir": None}


def test_a_directory_of_other_files_is_refused_by_every_mode(tmp_path):
    path = tmp_path / "mine"
    path.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "model", "notes.md"):
        (path / name).write_text("x")
    listing = "a.txt, b.txt, c.txt, d.txt, e.txt and 2 more"
    for resume, overwrite in (("none", False), ("auto", False), ("none", True)):
        assert refused(path, resume, overwrite) == (
            f"--output-dir {path} holds files emodist did not write ({listing}): choose a new or empty "
            "--output-dir (nothing there was changed)")


def test_a_run_is_never_replaced_by_a_plain_start(tmp_path):
    path = a_run(tmp_path / "run", saved=[20])
    assert refused(path) == (f"--output-dir {path} already holds a run (checkpoints, metrics.jsonl): continue it with "
                             "--resume auto, choose a new --output-dir, or pass --overwrite to move it aside")


def test_a_run_from_before_the_marker_is_still_a_run(tmp_path):
    path = a_run(tmp_path / "run", finished=True)
    (path / MARKER).unlink()
    assert not Contents.of(path).foreign
    assert "already holds a run (metrics.jsonl, summary.json)" in refused(path)
    (path / "summary.json").unlink()
    (path / "metrics.jsonl").unlink()
    assert Contents.of(path).foreign  # config.yaml alone is not a run's


def test_overwrite_moves_the_run_aside_whole_and_says_where(tmp_path):
    path = a_run(tmp_path / "run", saved=[20], finished=True)
    before = snapshot(path)
    run, said = start(path, overwrite=True)
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert snapshot(aside) == before
    assert said == [f"emodist: moved the run that was in {path} to {aside} (--overwrite); delete it when it is no "
                    "longer needed"]
    assert run.checkpoint is None and sorted(p.name for p in path.iterdir()) == [MARKER, "config.yaml"]


def test_moving_aside_twice_in_one_second_takes_a_free_name(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    aside = contract.move_aside(first)
    second.mkdir()
    second.rename(first)
    (first / "x").write_text("second")
    again = contract.move_aside(first)
    assert again != aside and again.name == f"{aside.name}-2"
    assert (again / "x").read_text() == "second" and not first.exists()


def test_overwrite_refuses_to_move_the_directory_it_runs_in(tmp_path, monkeypatch):
    """`--output-dir . --overwrite` was an internal error ('.' has no name); from inside the run, by its full
    path, the new run would have been written into the moved-aside one (the process's directory moves with it)."""
    path = a_run(tmp_path / "run", saved=[20], finished=True)
    for inside, given, named in ((path, Path("."), Path(".")), (path / "checkpoints", path, path),
                                 (path / "checkpoints", Path(".."), path)):  # a path through `..` is named as itself
        monkeypatch.chdir(inside)
        assert refused(given, "none", True) == (
            f"--overwrite would move aside {named}, which this command runs in: run it from outside that directory "
            "(e.g. its parent), with --output-dir naming it from there")
    empty = tmp_path / "empty"  # nothing to move: it starts there
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert start(Path("."), "none", True)[0].path == Path(".")


def test_overwrite_of_a_path_through_dot_dot_moves_the_run_it_names(tmp_path, monkeypatch):
    """`--output-dir runs/r/plots/.. --overwrite` tried to rename `..` itself (an internal error, EBUSY)."""
    path = a_run(tmp_path / "run", saved=[20], finished=True)
    (path / "plots").mkdir()
    before = snapshot(path)
    monkeypatch.chdir(tmp_path)
    run = contract._open(settings(Path("run/plots/..")), LABELS, TOPOLOGY, True, "none", [].append)
    run.close()
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert snapshot(aside) == before
    assert run.path == path and sorted(p.name for p in path.iterdir()) == [MARKER, "config.yaml"]


def test_overwrite_and_resume_auto_are_refused_together(tmp_path):
    path = a_run(tmp_path / "run", saved=[20])
    assert refused(path, "auto", True) == ("--overwrite with --resume auto: --overwrite moves the run aside, --resume "
                                           "continues it: choose one")


def test_resume_auto_needs_an_output_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where runs/<variant>-<time> would go
    assert refused(None, "auto") == ("--resume auto continues the run in --output-dir, and none was given: add "
                                     "--output-dir runs/<the run> (or drop --resume to start a new run)")


def test_resume_auto_starts_a_run_that_is_not_there_yet(tmp_path):
    run, said = start(tmp_path / "run", "auto")
    assert run.checkpoint is None and said == [f"emodist: no run in {tmp_path / 'run'} yet: starting it (--resume auto)"]


def test_resume_auto_takes_the_newest_checkpoint_that_verifies_and_says_which_it_skipped(tmp_path):
    path = a_run(tmp_path / "run", saved=[20, 40])
    (path / "checkpoints" / "step-40" / "weights.bin").write_bytes(b"1")
    before = snapshot(path)
    run, said = start(path, "auto")
    assert run.checkpoint == path / "checkpoints" / "step-20" and not run.finished and run.fork_of is None
    assert said == [f"emodist: skipped checkpoint {path / 'checkpoints' / 'step-40'}: weights.bin is cut short or has "
                    "grown (1 bytes, saved with 5)"]
    changed = {k for k in set(before) | set(snapshot(path)) if before.get(k) != snapshot(path).get(k)}
    assert changed == set()  # nothing of the run changes before its checkpoint has loaded (Run.restored)


def test_resume_auto_refuses_a_checkpoint_of_other_settings(tmp_path):
    path = a_run(tmp_path / "run", saved=[20])
    assert refused(path, "auto", False, "optim.lr=0.5").startswith(
        f"--resume auto: {path / 'checkpoints' / 'step-20'} was trained with other settings: optim.lr=")


def test_a_finished_run_of_the_same_length_is_left_as_it_is(tmp_path):
    path = a_run(tmp_path / "run", saved=[20], finished=True)
    before = snapshot(path)
    run, _ = start(path, "auto")
    assert run.finished and snapshot(path) == before


def test_a_finished_run_made_longer_trains_on_from_its_last_checkpoint(tmp_path):
    path = a_run(tmp_path / "run", saved=[20], finished=True)
    run, _ = start(path, "auto", False, "train.max_steps=900")
    assert run.checkpoint == path / "checkpoints" / "step-20" and not run.finished


def test_a_finished_run_made_longer_without_a_checkpoint_is_refused(tmp_path):
    path = a_run(tmp_path / "run", finished=True)
    assert refused(path, "auto", False, "train.max_steps=900") == (
        f"--resume auto: {path} holds a finished run and no complete checkpoint to train on from: leave "
        "train.epochs / train.max_steps as they were, or start a new run in a new --output-dir (nothing was changed)")


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path):
    path = a_run(tmp_path / "run")
    (path / "wandb").mkdir()
    run, said = start(path, "auto")
    assert run.checkpoint is None
    assert said == [f"emodist: {path} stopped before its first checkpoint: starting it again from step 0"]
    assert sorted(p.name for p in path.iterdir()) == [MARKER, "config.yaml"]


def test_a_run_stopped_before_its_first_checkpoint_with_other_settings_is_refused(tmp_path):
    path = a_run(tmp_path / "run")
    assert refused(path, "auto", False, "data.max_length=64") == (
        f"--resume auto: {path} was started with other settings: data.max_length=32 there, 64 here: resume with its "
        "settings (--config on its config.yaml), or start a new run in a new --output-dir")


def test_nothing_to_resume_beside_outputs_of_value_is_refused_saying_why(tmp_path):
    path = a_run(tmp_path / "run", saved=[20], **{"thresholds.json": "{}"})
    (path / "checkpoints" / "step-20" / "state.json").unlink()
    assert refused(path, "auto") == (
        f"--resume auto: no complete checkpoint in {path} (step-20: no state.json (a save that never finished)), and "
        "it holds checkpoints, thresholds.json: nothing was changed; start a new run in a new --output-dir, or pass "
        "--overwrite to move this one aside and start again")
    no_config = tmp_path / "bare"
    no_config.mkdir()
    (no_config / MARKER).write_text("{}")
    (no_config / "metrics.jsonl").write_text("")
    assert "(there is none), and it holds no config.yaml" in refused(no_config, "auto")


def test_a_named_checkpoint_must_be_one_and_must_verify(tmp_path):
    path = a_run(tmp_path / "run", saved=[20])
    for named in (path / "model", path / "checkpoints" / "model", path / "model" / "step-20"):
        assert refused(path, str(named)) == (f"--resume {named}: not a checkpoint directory (expected "
                                             "<run>/checkpoints/step-N): name one, or pass --resume auto with --output-dir")
    (path / "checkpoints" / "step-20" / "weights.bin").unlink()
    assert refused(path, str(path / "checkpoints" / "step-20")) == (
        f"--resume {path / 'checkpoints' / 'step-20'}: weights.bin is missing: name another checkpoint, or pass "
        "--resume auto")


def test_a_named_checkpoint_resumes_its_own_run_and_overwrite_may_not_move_it(tmp_path):
    path = a_run(tmp_path / "run", saved=[20, 40])
    named = path / "checkpoints" / "step-20"
    run, _ = start(path, str(named))
    assert run.checkpoint == named and run.fork_of is None
    assert refused(path, str(named), True) == (f"--overwrite would move aside {path}, whose checkpoint --resume {named} "
                                               "names: drop --overwrite, or resume into a new --output-dir")


def test_a_named_checkpoint_forks_into_a_new_directory_but_never_over_a_run(tmp_path):
    source = a_run(tmp_path / "run", saved=[20])
    named = source / "checkpoints" / "step-20"
    run, _ = start(tmp_path / "fork", str(named))
    assert run.checkpoint == named and run.fork_of == source
    taken = a_run(tmp_path / "taken", saved=[20])
    assert refused(taken, str(named)) == (
        f"--resume {named} starts a new run in --output-dir {taken}, which already holds {MARKER}, checkpoints, "
        "config.yaml, metrics.jsonl: choose a new or empty --output-dir, or pass --overwrite to move that aside")


def test_truncating_metrics_keeps_the_steps_up_to_the_checkpoint_and_stops_at_a_cut_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 2, "x": 1}\n')
    timeline.truncate_metrics(metrics, after_step=2)
    assert metrics.read_text() == '{"step": 1}\n{"step": 2}\n{"step": 2, "x": 1}\n'
    metrics.write_text('{"step": 1}\n{"ste')  # killed mid-line
    timeline.truncate_metrics(metrics, after_step=5)
    assert metrics.read_text() == '{"step": 1}\n'
    timeline.truncate_metrics(tmp_path / "none.jsonl", after_step=1)
    assert not (tmp_path / "none.jsonl").exists()


def test_restored_keeps_the_summary_it_replaces_and_writes_this_config(tmp_path):
    path = a_run(tmp_path / "run", saved=[20], finished=True, steps=64)
    (path / "metrics.jsonl").write_text('{"step": 20}\n{"step": 21}\n')
    run = contract.Run(path, path / "checkpoints" / "step-20")
    run.restored(settings(path, "train.max_steps=99"), 20)
    assert (path / "metrics.jsonl").read_text() == '{"step": 20}\n'
    assert json.loads((path / "summary.step-64.json").read_text()) == {"train": {"steps": 64}}
    assert not (path / "summary.json").exists()
    assert config.load(config_file=str(path / "config.yaml")).train.max_steps == 99
    (path / "summary.json").write_text("not json")
    run.restored(settings(path), 20)
    assert (path / "summary.step-unknown.json").read_text() == "not json"
    for steps in (70, 64):  # rewound again to before step 64: both summaries of step 64 are kept
        (path / "summary.json").write_text(json.dumps({"train": {"steps": steps}, "again": True}))
        run.restored(settings(path), 20)
    assert json.loads((path / "summary.step-64.json").read_text()) == {"train": {"steps": 64}}
    assert json.loads((path / "summary.step-64.2.json").read_text()) == {"train": {"steps": 64}, "again": True}


def test_json_is_written_whole_with_null_for_what_json_cannot_hold(tmp_path):
    target = tmp_path / "s.json"
    files.write_json(target, {"a": math.nan, "b": [1.0, math.inf, (2, -math.inf)], "c": {"d": 0.5}})
    assert json.loads(target.read_text()) == {"a": None, "b": [1.0, None, [2, None]], "c": {"d": 0.5}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]  # no temporary file left


def test_the_default_run_directory_names_the_variant_and_sorts_smoke_runs_together():
    assert re.fullmatch(r"runs/distilbert-20\d{6}-\d{6}", contract.default_run_dir(config.load("distilbert")))
    assert re.fullmatch(r"runs/smoke-distilbert-20\d{6}-\d{6}",
                        contract.default_run_dir(config.load("distilbert", smoke=True)))


def test_a_start_without_an_output_dir_makes_the_default_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    said = []
    run = contract._open(settings(None), LABELS, TOPOLOGY, False, "none", said.append)
    run.close()
    assert re.fullmatch(r"runs/smoke-distilbert-20\d{6}-\d{6}", str(run.path)) and (run.path / "config.yaml").is_file()


def test_moved_aside_names_carry_the_time(tmp_path):
    (tmp_path / "run").mkdir()
    assert re.fullmatch(r"run\.replaced-20\d{6}-\d{6}", contract.move_aside(tmp_path / "run").name)


@pytest.mark.parametrize("output", ["metrics.jsonl", "summary.json", "checkpoints"])
def test_a_run_from_before_the_marker_is_known_by_any_of_its_outputs(tmp_path, output):
    (tmp_path / "config.yaml").write_text("")
    (tmp_path / output).mkdir() if output == "checkpoints" else (tmp_path / output).write_text("")
    contents = Contents.of(tmp_path)
    assert contents.path == tmp_path and contents.marked and not contents.foreign


def test_a_fork_takes_the_history_of_its_source_up_to_the_checkpoint(tmp_path):
    source = a_run(tmp_path / "run", saved=[20])
    (source / "metrics.jsonl").write_text('{"step": 10}\n{"step": 20}\n{"step": 30}\n')
    fork = tmp_path / "fork"
    fork.mkdir()
    contract.Run(fork, source / "checkpoints" / "step-20", fork_of=source).restored(settings(fork), 20)
    assert (fork / "metrics.jsonl").read_text() == '{"step": 10}\n{"step": 20}\n'
    assert (source / "metrics.jsonl").read_text().count("step") == 3  # the source keeps its own


def test_nothing_to_resume_names_every_checkpoint_it_skipped(tmp_path):
    path = a_run(tmp_path / "run", saved=[20, 40])
    for step in (20, 40):
        (path / "checkpoints" / f"step-{step}" / "state.json").unlink()
    assert refused(path, "auto").startswith(
        f"--resume auto: no complete checkpoint in {path} (step-40: no state.json (a save that never finished); "
        "step-20: no state.json (a save that never finished)), and it holds checkpoints: ")


def test_a_named_checkpoint_of_other_settings_is_refused_naming_it(tmp_path):
    path = a_run(tmp_path / "run", saved=[20])
    named = path / "checkpoints" / "step-20"
    assert refused(path, str(named), False, "optim.lr=0.5").startswith(
        f"--resume {named}: it was trained with other settings: optim.lr=")


def test_the_lock_of_a_launch_that_ended_is_taken_over_and_said_so(tmp_path):
    import socket
    import subprocess

    import psutil

    from emodist.rundir.lock import LOCK

    path = a_run(tmp_path / "run", saved=[20])
    ended = subprocess.Popen(["true"])
    ended.wait()
    (path / LOCK).write_text(json.dumps({"token": "t", "host": socket.gethostname(), "pid": ended.pid,
                                         "pid_started": psutil.Process().create_time()}))
    run, said = start(path, "auto")
    assert run.checkpoint == path / "checkpoints" / "step-20"
    assert said == [f"emodist: took over the lock of {path}: its process {ended.pid} on this host has ended"]


def test_json_is_written_indented_for_people_to_read(tmp_path):
    target = tmp_path / "s.json"
    files.write_json(target, {"a": 1, "b": [2]})
    assert target.read_text(encoding="utf-8") == '{\n  "a": 1,\n  "b": [\n    2\n  ]\n}\n'


def test_truncating_metrics_reads_past_bytes_that_are_not_utf8(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(b'{"step": 1, "note": "caf\xe9"}\n{"step": 2}\n')
    timeline.truncate_metrics(metrics, after_step=1)
    assert metrics.read_text(encoding="utf-8") == '{"step": 1, "note": "caf\ufffd"}\n'


def test_moving_aside_after_100_names_in_one_second_takes_the_next_and_replaces_none(tmp_path, monkeypatch):
    """It gave up at 100 names, refusing --overwrite; nothing is replaced either way."""
    monkeypatch.setattr(contract.time, "strftime", lambda _: "20261203-120000")
    (tmp_path / "run").mkdir()
    taken = [tmp_path / ("run.replaced-20261203-120000" + (f"-{number}" if number > 1 else "")) for number in range(1, 101)]
    for path in taken:
        path.mkdir()
    assert contract.move_aside(tmp_path / "run") == tmp_path / "run.replaced-20261203-120000-101"
    assert not (tmp_path / "run").exists() and all(path.is_dir() and not any(path.iterdir()) for path in taken)


def test_a_run_directory_that_cannot_be_moved_aside_is_refused_in_one_line(tmp_path, monkeypatch):
    """--overwrite of a run directory that is a mount point was an internal error (OSError: EBUSY)."""
    import errno
    import os

    def busy(source, target):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(source))

    monkeypatch.setattr(contract.time, "strftime", lambda _: "20261203-120000")
    monkeypatch.setattr(contract.os, "rename", busy)
    (tmp_path / "run").mkdir()
    with pytest.raises(UsageError) as error:
        contract.move_aside(tmp_path / "run")
    assert str(error.value) == (f"--overwrite: cannot move {tmp_path / 'run'} aside to run.replaced-20261203-120000 "
                                "(Device or resource busy): nothing was changed; choose a new --output-dir, or move or "
                                "empty it yourself")


def test_a_listing_shows_five_names_and_counts_the_rest(tmp_path):
    for name in ("a", "b", "c", "d", "e"):
        (tmp_path / name).write_text("x")
    assert Contents.of(tmp_path).listing() == "a, b, c, d, e"
    (tmp_path / "f").write_text("x")
    assert Contents.of(tmp_path).listing() == "a, b, c, d, e and 1 more"
    assert Contents.of(tmp_path / "none").entries == []  # a directory not made yet holds nothing


def test_closing_a_run_twice_releases_its_lock_once(tmp_path):
    """The entry script closes the run in a finally: a close after an earlier one must be a no-op."""
    from emodist.rundir.lock import LOCK

    run = contract._open(settings(tmp_path / "run"), LABELS, TOPOLOGY, False, "none", print)
    assert (run.path / LOCK).exists()
    run.close()
    run.close()
    assert run.lock is None and not (run.path / LOCK).exists()
