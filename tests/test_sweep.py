"""Sweeps (launch/sweep.py): specs expanded into trials, bad specs refused in one line, a sweep directory that is
never mixed up with another, a 2-trial smoke sweep run here (--local), skipped when run again, and ranked on dev
by launch/compare.py. The same sweep as a SLURM job array is in tests/test_slurm.py."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, metrics_so_far, read_summary

from emodist.rundir.lock import LOCK
from emodist.runtime.errors import UsageError
from emodist.sweep import runner, spec


def write_spec(tmp_path: Path, name: str = "s", **content) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"variant": "minilm", "smoke": True, **content}, sort_keys=False), encoding="utf-8")
    return path


def sweep_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch" / "sweep.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_a_grid_is_every_combination_in_order_each_trial_in_the_sweep_s_group(tmp_path):
    path = write_spec(tmp_path, "losses", fixed={"train.max_steps": 5},
                      parameters={"train.loss": ["bce", "asl"], "optim.lr": [1e-4, 3e-4]})
    loaded = spec.load(path)
    assert loaded.output_dir == Path("runs/sweeps/losses") and loaded.metric == "dev_tuned.f1_macro"
    assert [t.name for t in loaded.trials] == ["000-loss=bce-lr=0.0001", "001-loss=bce-lr=0.0003",
                                               "002-loss=asl-lr=0.0001", "003-loss=asl-lr=0.0003"]
    assert loaded.trials[2].overrides == ["train.max_steps=5", "train.loss=asl", "optim.lr=0.0001", "track.group=losses"]


def test_random_draws_are_seeded_within_their_ranges(tmp_path):
    parameters = {"optim.lr": {"min": 1e-5, "max": 1e-3, "log": True}, "train.asl_gamma_neg": {"min": 1, "max": 5},
                  "train.loss": ["asl", "focal"]}
    first = spec.load(write_spec(tmp_path, method="random", trials=12, seed=3, parameters=parameters))
    again = spec.load(write_spec(tmp_path, method="random", trials=12, seed=3, parameters=parameters))
    other = spec.load(write_spec(tmp_path, method="random", trials=12, seed=4, parameters=parameters))
    assert [t.overrides for t in first.trials] == [t.overrides for t in again.trials]
    assert [t.overrides for t in first.trials] != [t.overrides for t in other.trials]
    values = [dict(o.split("=", 1) for o in t.overrides) for t in first.trials]
    lrs = [float(v["optim.lr"]) for v in values]
    assert all(1e-5 <= lr <= 1e-3 for lr in lrs) and min(lrs) < 1e-4 < max(lrs)  # log-uniform reaches both decades
    assert all(1 <= float(v["train.asl_gamma_neg"]) <= 5 for v in values)
    assert {v["train.loss"] for v in values} == {"asl", "focal"}


@pytest.mark.parametrize(("content", "message"), [
    ({"parameters": {"optim.lr": [1e-4]}, "epochs": 3}, "unknown key 'epochs': a sweep spec has variant,"),
    ({"parameters": {}}, "parameters: empty"),
    ({"parameters": {"variant": ["minilm", "distilbert"]}},
     "parameters.variant: a sweep trains one variant, the one its variant: key names; sweep another variant with a "
     "spec of its own"),
    ({"parameters": {"optim.lr": [1e-4]}, "fixed": {"smoke": False}},
     "fixed.smoke: the spec's smoke: key sets it for every trial"),
    ({"parameters": {"optim.lr": {"min": 1e-5, "max": 1e-3}}}, "a grid takes a non-empty list of values"),
    ({"parameters": {"optim.lrr": [1e-4]}}, "trial 000-lrr=0.0001: override 'optim.lrr=0.0001': unknown key 'optim.lrr' (did you mean optim.lr?)"),
    ({"parameters": {"train.asl_clip": [0.05, 1.5]}}, "trial 001-asl_clip=1.5: train.asl_clip: must be in [0, 1)"),
    ({"parameters": {"optim.lr": [1e-4]}, "metric": "test_tuned.f1_macro"}, "trials are selected on dev only"),
    ({"parameters": {"optim.lr": {"min": 1e-3, "max": 1e-5}}, "method": "random", "trials": 2},
     "a range is {min: LOW, max: HIGH"),
    ({"parameters": {"optim.lr": [1e-4]}, "method": "random"}, "trials: None: expected a whole number >= 1"),
    # found by a new user: internal errors, settings passed over without a word, a typo found after every trial
    ({"parameters": {"optim.lr": [1e-4]}, "output_dir": 5}, "output_dir: 5: expected a directory path"),
    ({"parameters": {1: [1e-4]}}, "parameters: 1 is no config key: write dotted keys, e.g. optim.lr"),
    ({"parameters": {"optim.lr": [1e-4]}, "name": "a" * 101}, "name: 'aaaaaa"),
    ({"parameters": {"optim.lr": [1e-4]}, "trials": 4}, "trials: applies to method: random (a grid runs every "
     "combination): remove it, or set method: random"),
    ({"parameters": {"optim.lr": [1e-4]}, "seed": 4}, "seed: applies to method: random"),
    ({"parameters": {"optim.lr": [1e-4]}, "fixed": {"output_dir": "x"}}, "fixed.output_dir: each trial's run directory "
     "is the sweep's output_dir/<trial>: set the spec's output_dir: instead"),
    ({"parameters": {"optim.lr": ["1e-4", 0.0001]}}, "trials 000-lr=1e-4 and 001-lr=0.0001 set the same config: remove "
     "one of the values"),
    ({"parameters": {"optim.lr": [1e-4]}, "metric": "dev.f1_macroo"}, "metric: dev.f1_macroo: no such score: KEY is "
     "one of f1_micro, f1_macro, precision_micro"),
])
def test_a_bad_spec_is_refused_in_one_line_naming_the_file_and_key(tmp_path, content, message):
    path = write_spec(tmp_path, **content)
    with pytest.raises(UsageError) as refused:
        spec.load(path)
    assert str(refused.value).startswith(str(path)) and message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_spec_may_nest_a_section_s_keys_as_a_config_file_does(tmp_path):
    """`fixed: {optim: {lr: ...}}` was refused as "a value with spaces", and nested parameters as no list."""
    nested = spec.load(write_spec(tmp_path, fixed={"train": {"max_steps": 5}, "model": {"lora": {"dropout": 0.1}}},
                                  parameters={"optim": {"lr": [1e-4, 3e-4]}}))
    dotted = spec.load(write_spec(tmp_path, fixed={"train.max_steps": 5, "model.lora.dropout": 0.1},
                                  parameters={"optim.lr": [1e-4, 3e-4]}))
    assert [t.overrides for t in nested.trials] == [t.overrides for t in dotted.trials]
    assert nested.trials[1].overrides[:3] == ["train.max_steps=5", "model.lora.dropout=0.1", "optim.lr=0.0003"]
    ranged = spec.load(write_spec(tmp_path, method="random", trials=2, parameters={
        "optim": {"lr": {"min": 1e-5, "max": 1e-4}}}))  # a range stays a range
    assert all(1e-5 <= float(t.overrides[0].split("=")[1]) <= 1e-4 for t in ranged.trials)


def test_a_sweep_begun_before_a_refusal_existed_goes_on_as_it_began(tmp_path):
    """Specs that loaded before (duplicate grid values, fixed.output_dir, trials: under a grid) are refused for
    a new sweep; one already begun must go on: editing its spec would change its trials (found by review)."""
    out = tmp_path / "out"
    path = write_spec(tmp_path, output_dir=str(out), trials=3, fixed={"output_dir": "x", "train.max_steps": 5},
                      parameters={"optim.lr": ["1e-4", 0.0001]})
    with pytest.raises(UsageError, match="trials: applies to method: random"):
        spec.load(path)
    out.mkdir()
    (out / runner.MANIFEST).write_text("{}")  # begun (with what trials.json holds compared by the runner)
    begun = spec.load(path)
    assert [t.name for t in begun.trials] == ["000-lr=1e-4", "001-lr=0.0001"]
    (out / runner.MANIFEST).write_text(json.dumps(runner._manifest(begun)))
    assert runner.started(spec.load(path))


def test_a_key_set_both_dotted_and_nested_is_refused_as_in_a_config_file(tmp_path):
    path = write_spec(tmp_path, fixed={"optim.lr": 1e-4, "optim": {"lr": 3e-4}}, parameters={"train.loss": ["bce"]})
    with pytest.raises(UsageError) as refused:
        spec.load(path)
    assert str(refused.value) == f"{path}: fixed: optim.lr is set twice (dotted and nested): keep one of them"


def test_every_score_a_run_reports_is_one_a_spec_may_rank_by():
    import numpy as np

    from emodist.scoring.metrics import SCORES, multilabel_metrics

    reported = multilabel_metrics(np.eye(2), np.eye(2), ["a", "b"])
    assert sorted(SCORES) == sorted(k for k in reported if k not in ("num_examples", "per_label", "confusion"))


def test_random_draws_stay_within_narrow_ranges_are_whole_for_whole_number_keys_and_never_repeat(tmp_path):
    """Draws were rounded to 3 digits after sampling: a narrow range gave values outside it, all the same;
    train.epochs drew 2.69, which the trial's config then refused; two trials could train the same model."""
    narrow = spec.load(write_spec(tmp_path, method="random", trials=3, parameters={
        "optim.warmup_ratio": {"min": 0.10051, "max": 0.10059}, "train.epochs": {"min": 1, "max": 4},
        "optim.weight_decay": {"min": 0, "max": 1}}))
    values = [dict(o.split("=", 1) for o in t.overrides) for t in narrow.trials]
    assert all(0.10051 <= float(v["optim.warmup_ratio"]) <= 0.10059 for v in values)
    assert len({v["optim.warmup_ratio"] for v in values}) == 3
    assert {v["train.epochs"] for v in values} <= {"1", "2", "3", "4"}  # whole: the key is
    assert any("." in v["optim.weight_decay"] for v in values)  # a float key's range is one of floats, bounds whole or not
    lists = spec.load(write_spec(tmp_path, method="random", trials=4, seed=0, parameters={
        "train.loss": ["bce", "asl"], "optim.lr": [1e-4, 2e-4]}))  # a repeat is drawn again: 4 of 4 combinations
    assert len({tuple(t.overrides) for t in lists.trials}) == 4
    with pytest.raises(UsageError) as refused:
        spec.load(write_spec(tmp_path, method="random", trials=3, parameters={"train.loss": ["bce", "asl"]}))
    assert str(refused.value).endswith(": trials: 3: 100 draws in a row gave only combinations drawn already (2 "
                                       "different ones so far): draw fewer trials, or widen the ranges")
    counts = Counter(spec._draw(random.Random(seed), {"min": 1, "max": 4}, True) for seed in range(4000))
    assert sorted(counts) == [1, 2, 3, 4] and min(counts.values()) > 900  # the bounds as likely as the rest


@pytest.mark.parametrize(("text", "line", "message"), [
    ("parameters:\n  optim.lr: [1e-5, 2e-5]\n  optim.lr: [3e-4]\n", 6, "optim.lr is set a second time (first at {path}:5)"),
    ("parameters:\n  optim.lr: [1e-5]\nparameters:\n  train.loss: [asl]\n", 6,
     "parameters is set a second time (first at {path}:4)"),
])
def test_a_key_a_spec_names_twice_is_refused_naming_both_lines(tmp_path, text, line, message):
    """PyYAML kept the last one, unsaid: the sweep ran a grid the user did not write."""
    path = tmp_path / "twice.yaml"
    path.write_text("variant: minilm\nsmoke: true\nmethod: grid\n" + text, encoding="utf-8")
    with pytest.raises(UsageError) as refused:
        spec.load(path)
    assert str(refused.value) == f"{path}:{line}: {message.format(path=path)}: keep one of them"
    both = write_spec(tmp_path, fixed={"optim.lr": 1e-4}, parameters={"optim.lr": [1e-5, 1e-4]})
    with pytest.raises(UsageError, match="optim.lr is both fixed and a parameter: keep it in one of them"):
        spec.load(both)
    merged = tmp_path / "merged.yaml"  # a merge key, and a key written beside it that overrides it, are no twice
    merged.write_text("variant: minilm\nsmoke: true\nparameters:\n  <<: {optim.lr: [1.0e-4], train.loss: [bce]}\n"
                      "  train.loss: [asl]\n", encoding="utf-8")
    assert spec.load(merged).trials[0].overrides[:2] == ["optim.lr=0.0001", "train.loss=asl"]


def test_a_range_written_as_yaml_reads_1e_4_is_a_range_of_numbers(tmp_path):
    path = tmp_path / "r.yaml"  # PyYAML reads 1e-5 (no dot) as a string
    path.write_text("variant: minilm\nsmoke: true\nmethod: random\ntrials: 3\nparameters:\n"
                    "  optim.lr: {min: 1e-5, max: 1e-3, log: true}\n", encoding="utf-8")
    lrs = [float(t.overrides[0].split("=")[1]) for t in spec.load(path).trials]
    assert len(lrs) == 3 and all(1e-5 <= lr <= 1e-3 for lr in lrs)


def test_yaml_that_does_not_parse_names_its_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("variant: minilm\nparameters:\n  optim.lr: [1e-4\n", encoding="utf-8")
    result = sweep_script(str(path), "--list")
    assert result.returncode == 2 and result.stderr.strip().startswith(f"emodist: error: {path}:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_directory_of_another_sweep_or_of_anything_else_is_refused_untouched(tmp_path):
    out = tmp_path / "sweep"
    first = spec.load(write_spec(tmp_path, "a", parameters={"optim.lr": [1e-4, 3e-4]}), out)
    runner.prepare(first)
    manifest = (out / runner.MANIFEST).read_text()
    runner.prepare(first)  # the same spec again: continues
    changed = spec.load(write_spec(tmp_path, "a", parameters={"optim.lr": [1e-4, 5e-4]}), out)
    with pytest.raises(UsageError, match="holds another sweep .*trial 001-lr=0.0003 there is 001-lr=0.0005"):
        runner.prepare(changed)
    assert (out / runner.MANIFEST).read_text() == manifest
    (out / "001-lr=0.0003").mkdir()
    (out / "001-lr=0.0003" / "summary.json").write_text("{}")  # the first spec's trial, finished
    longer = write_spec(tmp_path, "a", parameters={"optim.lr": [1e-4, 3e-4]}, fixed={"train.max_steps": 8})
    listed = sweep_script(str(longer), "--list", "--output-dir", str(out))  # the same trial names, other settings
    assert listed.returncode == 2 and "finished" not in listed.stdout
    assert "holds another sweep (trial 000-lr=0.0001 there is 000-lr=0.0001 with train.max_steps=8 here)" in \
        listed.stderr  # the setting that differs, not every override of the trial
    two = {"train.max_steps": 5, "optim.weight_decay": 0.1}
    ordered = spec.load(write_spec(tmp_path, "o", parameters={"optim.lr": [1e-4]}, fixed=two), tmp_path / "o")
    grid = {"optim.lr": [1e-4, 3e-4], "train.loss": ["bce", "asl"]}
    runner.prepare(spec.load(write_spec(tmp_path, "g", parameters=grid), tmp_path / "g"))
    with pytest.raises(UsageError, match=r"\(the same trials, its parameters in another order: trial names follow "
                                         r"that order; keep the one it began with\)"):  # listed every override
        runner.prepare(spec.load(write_spec(tmp_path, "g", parameters=dict(reversed(grid.items()))), tmp_path / "g"))
    runner.prepare(ordered)  # the same settings in another order of keys: the same sweep (it was "another sweep")
    assert runner.started(spec.load(write_spec(tmp_path, "o", parameters={"optim.lr": [1e-4]},
                                               fixed=dict(reversed(two.items()))), tmp_path / "o"))
    assert runner.started(first) and not runner.started(spec.load(write_spec(tmp_path, "c", parameters={"optim.lr": [1e-4]}), tmp_path / "new"))
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="holds no trials.json: it is not a sweep directory"):
        runner.prepare(spec.load(write_spec(tmp_path, "b", parameters={"optim.lr": [1e-4]}), elsewhere))
    assert [p.name for p in elsewhere.iterdir()] == ["notes.txt"]


def test_slurm_without_a_controller_is_refused_before_the_sweep_directory_is_written(tmp_path):
    """A login node whose controller is down (here: an `scontrol` that answers as a stopped slurmctld does, and an
    `sbatch` that must not be reached): one line, and no sweep directory left behind to explain."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'Slurmctld(primary) at head is DOWN'\nexit 1\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ntouch {tmp_path}/sbatch-ran\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    out = tmp_path / "sweep"
    result = subprocess.run([sys.executable, str(ROOT / "launch" / "sweep.py"),
                             str(write_spec(tmp_path, parameters={"optim.lr": [1e-4, 3e-4]})), "--slurm",
                             "--output-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("emodist: error: --slurm: no SLURM controller answers (`scontrol ping`: "
                                     "Slurmctld(primary) at head is DOWN); nothing was written: start the cluster or "
                                     "run the trials here with --local")
    assert not out.exists() and not (tmp_path / "sbatch-ran").exists()


def test_a_local_sweep_stopped_keeps_its_trial_resumes_it_skips_finished_ones_and_ranks_on_dev(tmp_path):
    """Stopped by a SIGTERM to the sweep alone (a scheduler's, `kill PID`), which it passes on to its trial: the
    sweep used to die at once, leaving its trial training on, which the next run of the sweep found in use. (A
    Ctrl-C in a terminal reaches the sweep and its trial alike, as one process group; the trial stops the same way.)"""
    out = tmp_path / "sweep"
    path = write_spec(tmp_path, "local", fixed={"train.max_steps": 40, "train.log_every_steps": 1, "track.plots": False,
                                                "track.wandb": "off"},
                      parameters={"train.loss": ["bce", "asl"]})
    first = subprocess.Popen([sys.executable, str(ROOT / "launch" / "sweep.py"), str(path), "--local", "--output-dir",
                              str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(r.get("step", 0) >= 3 for r in metrics_so_far(out / "000-loss=bce")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGTERM)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 130, stderr[-3000:]
    assert "run the same command again to continue" in stderr
    stopped = sorted((out / "000-loss=bce" / "checkpoints").glob("step-*"))
    assert json.loads((stopped[-1] / "state.json").read_text())["stopped_by"] == "SIGTERM"  # saved, not killed
    assert not (out / "000-loss=bce" / LOCK).exists()  # the trial had ended when the sweep did
    assert not (out / "001-loss=asl").exists()  # the sweep stopped with its trial
    listed = sweep_script(str(path), "--list", "--output-dir", str(out))  # said "to run" of the stopped trial
    assert [re.split(r"\s{2,}", line)[:2] for line in listed.stdout.splitlines()] == [
        ["000-loss=bce", f"at {stopped[-1].name.replace('-', ' ')}"], ["001-loss=asl", "to run"]]

    result = sweep_script(str(path), "--local", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 trial(s)" in result.stdout and "2 to run" in result.stdout
    summaries = {name: read_summary(out / name) for name in ("000-loss=bce", "001-loss=asl")}
    assert summaries["000-loss=bce"]["perf"]["sessions"] == 2  # resumed, not started again
    for name, summary in summaries.items():
        config = yaml.safe_load((out / name / "config.yaml").read_text())
        assert config["train"]["loss"] == name.split("=")[1] and config["track"]["group"] == "local"
        assert summary["train"]["steps"] == 40 and "dev_tuned" in summary
    assert json.loads((out / "trials.json").read_text())["trials"][1]["name"] == "001-loss=asl"

    again = sweep_script(str(path), "--local", "--output-dir", str(out))
    assert again.returncode == 0 and "0 to run" in again.stdout and "every trial finished" in again.stdout

    ranked = subprocess.run([sys.executable, str(ROOT / "launch" / "compare.py"), str(out), "--rank-by",
                             "dev_tuned.f1_macro"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ranked.returncode == 0, ranked.stderr
    order = sorted(summaries, key=lambda name: -summaries[name]["dev_tuned"]["f1_macro"])
    lines = [line for line in ranked.stdout.splitlines() if "dev_tuned.f1_macro" in line]
    assert [line.rsplit("/", 1)[-1] for line in lines] == order
    winner = out / "comparison" / "winner-config.yaml"
    assert winner.read_text() == (out / order[0] / "config.yaml").read_text()

    peeking = subprocess.run([sys.executable, str(ROOT / "launch" / "compare.py"), str(out), "--rank-by",
                              "test_tuned.f1_macro", "--output", str(tmp_path / "peek")], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert peeking.returncode == 2 and "rank on a dev score" in peeking.stderr
    assert not (tmp_path / "peek").exists()
