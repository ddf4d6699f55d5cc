"""launch/compare.py over run directories: the table holds each run's summary.json values; runs of
another data set or label set are refused; unfinished runs are named, not silently dropped.

Most runs here are run directories written by hand (summary.json is the contract compare.py reads); the
last test compares real smoke runs of three variants, and tests/test_slurm.py the runs of a study.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, assert_drawn

from emodist.runtime import errors

LABELS = ["joy", "anger", "surprise"]


def write_run(path: Path, variant: str, f1_macro: float, labels=LABELS, dataset="goemotions") -> Path:
    path.mkdir(parents=True)
    scores = {"f1_macro": f1_macro, "f1_micro": f1_macro + 0.05, "precision_micro": 0.7, "recall_micro": 0.6,
              "subset_accuracy": 0.4,
              "per_label": {name: {"f1": f1_macro * (i + 1) / len(labels), "support": 10 * (i + 1)}
                            for i, name in enumerate(labels)},
              "confusion": {name: [[50, i], [3, 7 + i]] for i, name in enumerate(labels)}}
    summary = {"variant": variant, "base_model": f"hub/{variant}", "method": "lora", "quantization": "none",
               "dataset": dataset, "labels": labels, "num_processes": 2, "num_nodes": 1,
               "distributed_type": "DEEPSPEED", "zero_stage": 3, "mixed_precision": "bf16",
               "params": {"total": 1000, "trainable": 10}, "train": {"steps": 50},
               "dev": scores, "test": scores,
               "perf": {"train_seconds": 12.5, "train_samples_per_s": 80.0, "train_tokens_per_s": 2500.0,
                        "peak_memory_bytes": 3 * 2**30}}
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.yaml").write_text(f"variant: {variant}\n")
    curve = [{"step": step, "train/loss": 0.7 / step} for step in range(1, 51)]
    curve += [{"step": step, "eval/f1_micro": f1_macro * step / 50} for step in (25, 50)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    return path


def compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch" / "compare.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_a_study_directory_gives_one_row_per_run_best_first(tmp_path):
    study = tmp_path / "study-7"
    write_run(study / "distilbert", "distilbert", 0.41)
    write_run(study / "gemma-lora", "gemma-lora", 0.52)
    unfinished = study / "mistral-lora"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("variant: mistral-lora\n")

    result = compare(str(study))
    assert result.returncode == 0, result.stderr
    assert "1 unfinished left out" in result.stdout
    rows = list(csv.DictReader((study / "comparison" / "comparison.csv").open()))
    assert [r["variant"] for r in rows] == ["gemma-lora", "distilbert"]  # best test F1 macro first
    assert float(rows[0]["test_f1_macro"]) == 0.52 and float(rows[1]["dev_f1_micro"]) == 0.41 + 0.05
    assert rows[0]["distributed"] == "DEEPSPEED ZeRO-3" and float(rows[0]["peak_memory_gib"]) == 3.0
    report = (study / "comparison" / "report.md").read_text()
    assert "| gemma-lora | gemma-lora | hub/gemma-lora |" in report and "0.5200" in report
    assert "`mistral-lora`" in report.split("Not finished")[1]


def test_runs_named_one_by_one_report_beside_them(tmp_path):
    a = write_run(tmp_path / "runs" / "a", "distilbert", 0.3)
    b = write_run(tmp_path / "runs" / "b", "minilm", 0.2)
    assert compare(str(a), str(b)).returncode == 0
    assert (tmp_path / "runs" / "comparison" / "report.md").exists()


def test_a_report_directory_is_replaced_only_when_a_comparison_wrote_it(tmp_path):
    study = tmp_path / "study"
    write_run(study / "a", "distilbert", 0.3)
    write_run(study / "b", "minilm", 0.2)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "comparison.csv").write_text("my own table\n")
    result = compare(str(study), "--output", str(mine))
    assert result.returncode == errors.EXIT_USAGE and result.stderr.strip().splitlines() == [
        f"emodist: error: --output {mine} holds files an emodist comparison did not write there (comparison.csv): "
        "nothing was written or replaced; choose another --output, or empty that directory"]
    assert sorted(p.name for p in mine.iterdir()) == ["comparison.csv"] and (mine / "comparison.csv").read_text() == (
        "my own table\n")

    report = study / "comparison"
    assert compare(str(study), "--rank-by", "dev.f1_macro").returncode == 0
    assert (report / "winner-config.yaml").read_text() == "variant: distilbert\n"
    again = compare(str(study))  # its own directory: replaced, the earlier ranking's winner removed
    assert again.returncode == 0, again.stderr
    assert not (report / "winner-config.yaml").exists() and (report / "report.md").is_file()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    listed = json.loads((report / ".emodist-comparison").read_text())
    listed["files"].append("../../outside.txt")  # edited by hand
    (report / ".emodist-comparison").write_text(json.dumps(listed))
    assert compare(str(study)).returncode == 0 and outside.read_text() == "keep\n"
    (report / "notes.txt").write_text("mine\n")  # a file of the user's among the report's: not replaced
    assert compare(str(study)).returncode == errors.EXIT_USAGE and (report / "notes.txt").read_text() == "mine\n"
    assert (report / "report.md").is_file()


def test_a_default_report_directory_holding_a_comparison_of_other_runs_is_not_replaced(tmp_path):
    """`compare.py runs/a runs/b`, then `compare.py runs/c`: both reports default to runs/comparison/, and the
    second deleted the first without a word."""
    runs = tmp_path / "runs"
    first = [write_run(runs / "a", "distilbert", 0.3), write_run(runs / "b", "minilm", 0.2)]
    assert compare(*map(str, first)).returncode == 0
    report = runs / "comparison"
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    third = write_run(runs / "c", "distilbert", 0.4)
    result = compare(str(third))
    assert result.returncode == errors.EXIT_USAGE and result.stderr.strip().splitlines() == [
        f"emodist: error: {report} holds the comparison of other runs ({first[0].resolve()}, {first[1].resolve()}): "
        "nothing was written or replaced; give this one its own --output, or compare those runs with these"]
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before
    assert compare(*map(str, first)).returncode == 0  # the same runs again: replaced, as before
    assert compare(str(third), "--output", str(report)).returncode == 0  # asked for by name: replaced
    every = [runs / name for name in ("a", "b", "c")]
    assert compare(*map(str, every), "--output", str(report)).returncode == 0
    assert compare(*map(str, sorted(runs.iterdir()))).returncode == 0  # runs/*: its own comparison/ passed over
    old = report / ".emodist-comparison"  # written before the runs were named: a list of its files
    old.write_text(json.dumps(json.loads(old.read_text())["files"]))
    assert compare(*map(str, first)).returncode == 0


def test_ranking_by_a_score_no_run_reports_lists_those_they_do(tmp_path):
    from emodist.report import compare as comparing

    runs = [write_run(tmp_path / "a", "distilbert", 0.3), write_run(tmp_path / "b", "minilm", 0.2)]
    assert [run.name for run, _ in comparing.rank(runs, "dev.f1_macro")] == ["a", "b"]
    with pytest.raises(errors.UsageError) as typo:
        comparing.rank(runs, "dev.f1_marco")
    holds = "f1_macro, f1_micro, precision_micro, recall_micro, subset_accuracy"
    assert str(typo.value) == f"--rank-by dev.f1_marco: dev.f1_marco is reported by no run: dev holds {holds}"
    with pytest.raises(errors.UsageError) as size:  # reported by every run, and no score
        comparing.rank(runs, "dev.num_examples")
    assert str(size.value) == f"--rank-by dev.num_examples: dev.num_examples is the split's size, no score: dev holds {holds}"
    for metric, why in (("f1_macro", "name the split and the score"), ("dev.", "name the split and the score"),
                        ("test.f1_macro", "choosing a model by its test score leaves no unbiased test score to report")):
        with pytest.raises(errors.UsageError) as refused:
            comparing.rank(runs, metric)
        assert str(refused.value) == (f"--rank-by {metric}: rank on a dev score (dev.KEY or dev_tuned.KEY, e.g. "
                                      f"dev_tuned.f1_macro): {why}")
    summary = json.loads((runs[1] / "summary.json").read_text())
    del summary["dev"]["subset_accuracy"]  # one run lacks what the other reports: named as an older run
    (runs[1] / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(errors.UsageError) as older:
        comparing.rank(runs, "dev.subset_accuracy")
    assert str(older.value).startswith(f"{runs[1] / 'summary.json'} has no number at dev.subset_accuracy (a run "
                                       "written before emodist reported it?)")


def test_a_summary_file_named_instead_of_its_run_and_an_empty_rank_by_are_refused(tmp_path):
    """`compare.py runs/a/summary.json` said "no such directory" of a file that is there; `--rank-by ""` (an
    unset variable in a script) was passed over without a word (found by a new user)."""
    run = write_run(tmp_path / "a", "minilm", 0.5)
    result = compare(str(run / "summary.json"))
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        f"emodist: error: {run / 'summary.json'}: a file, not a run directory: name the directory that holds it, {run}")
    result = compare(str(run), "--rank-by", "", "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "--rank-by : rank on a dev score" in result.stderr
    assert not (tmp_path / "out").exists()
    summary = json.loads((run / "summary.json").read_text())
    other = write_run(tmp_path / "b", "minilm", 0.6)
    dev = {k: v for k, v in summary["dev"].items() if k != "f1_macro"}  # written before emodist reported it
    (other / "summary.json").write_text(json.dumps({**summary, "dev": dev}))
    result = compare(str(run), str(other), "--rank-by", "dev.f1_macro", "--output", str(tmp_path / "out"))
    assert result.stderr.strip().splitlines()[-1] == (  # it suggested the very key it refused
        f"emodist: error: {other / 'summary.json'} has no number at dev.f1_macro (a run written before emodist "
        f"reported it?): rank by a dev score it has, e.g. dev.{next(k for k in dev if k != 'num_examples')}, or "
        "compare without it")


def test_runs_whose_only_common_directory_is_the_root_need_an_output(tmp_path):
    """`compare.py /dev/shm/x /tmp/y` wrote /comparison/, as root (found by a new user)."""
    import tempfile

    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        result = compare(str(write_run(tmp_path / "a", "minilm", 0.5)), str(write_run(elsewhere / "b", "minilm", 0.6)))
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
            "emodist: error: the runs compared lie in no directory of their own (their common one is /): choose where "
            "the report goes with --output")
        assert not Path("/comparison").exists()
    finally:
        shutil.rmtree(elsewhere)


def test_runs_of_another_label_set_are_refused_in_one_line(tmp_path):
    a = write_run(tmp_path / "a", "distilbert", 0.3)
    b = write_run(tmp_path / "b", "minilm", 0.2, labels=["positive", "negative"])
    result = compare(str(a), str(b), "--output", str(tmp_path / "out"))
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.count("emodist: error:") == 1
    assert "differ in their labels" in result.stderr and "a: 3 labels" in result.stderr
    assert not (tmp_path / "out").exists()


def test_runs_of_another_data_set_are_refused(tmp_path):
    a = write_run(tmp_path / "a", "distilbert", 0.3)
    b = write_run(tmp_path / "b", "distilbert", 0.3, dataset="semeval")
    result = compare(str(a), str(b))
    assert result.returncode == errors.EXIT_USAGE and "differ in their dataset" in result.stderr


def test_one_data_set_in_two_folders_compares_by_its_test_fingerprint(tmp_path):
    """A csv data set's name is its folder's: a copy of it in another folder was refused as another data set."""
    a = write_run(tmp_path / "a", "distilbert", 0.3, dataset="csv1")
    b = write_run(tmp_path / "b", "minilm", 0.2, dataset="csv1copy")
    for run, fingerprint in ((a, "aaaa1111"), (b, "aaaa1111")):
        summary = json.loads((run / "summary.json").read_text())
        summary["splits"] = {"test": {"examples": 5, "fingerprint": fingerprint}}
        (run / "summary.json").write_text(json.dumps(summary))
    assert compare(str(a), str(b), "--output", str(tmp_path / "out")).returncode == 0
    summary["splits"]["test"]["fingerprint"] = "bbbb2222"  # b's test set is another one
    (b / "summary.json").write_text(json.dumps(summary))
    result = compare(str(a), str(b), "--output", str(tmp_path / "out2"))
    assert result.returncode == errors.EXIT_USAGE and "differ in their test set" in result.stderr


def test_runs_scored_on_different_test_sets_are_refused_and_the_table_shows_the_counts(tmp_path):
    a = write_run(tmp_path / "a", "distilbert", 0.3)
    b = write_run(tmp_path / "b", "minilm", 0.2)
    for run, size in ((a, 500), (b, 200)):
        summary = json.loads((run / "summary.json").read_text())
        summary["test"]["num_examples"] = size
        (run / "summary.json").write_text(json.dumps(summary))
    result = compare(str(a), str(b))
    assert result.returncode == errors.EXIT_USAGE
    assert "differ in their test set size, so their scores do not compare (a: 500 examples; b: 200 examples)" in result.stderr

    for run, fingerprint in ((a, "aaaa1111"), (b, "bbbb2222")):  # the same size, other examples
        summary = json.loads((run / "summary.json").read_text())
        summary["test"]["num_examples"] = 500
        summary["splits"] = {"test": {"examples": 500, "fingerprint": fingerprint}}
        (run / "summary.json").write_text(json.dumps(summary))
    result = compare(str(a), str(b))
    assert "differ in their test set, so their scores do not compare (a: 500 examples, aaaa1111; b: 500 examples, " \
           "bbbb2222)" in result.stderr

    for run in (a, b):
        summary = json.loads((run / "summary.json").read_text())
        summary["splits"]["test"]["fingerprint"] = "cccc3333"
        (run / "summary.json").write_text(json.dumps(summary))
    result = compare(str(a), str(b), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert [r["test_examples"] for r in rows] == ["500", "500"]
    assert "| test examples |" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize(("content", "message"), [
    ("[]", "a JSON list, not an object"),
    ('{"variant": "x"}', "dataset is missing or not text"),
    (("test", "f1_macro", "high"), "test.f1_macro is 'high', not a number"),
    (("dev", "f1_micro", float("nan")), "dev.f1_micro is nan, not a number"),  # emodist writes null, never NaN
    (("test", "f1_macro", float("inf")), "test.f1_macro is inf, not a number"),
])
def test_a_summary_that_is_not_emodists_is_refused_naming_it(tmp_path, content, message):
    """A NaN score (hand-edited) was compared, and ranked as if it were one."""
    a = write_run(tmp_path / "a", "distilbert", 0.3)
    b = write_run(tmp_path / "b", "minilm", 0.2)
    if isinstance(content, tuple):
        section, key, value = content
        summary = json.loads((b / "summary.json").read_text())
        summary[section][key] = value
        content = json.dumps(summary)
    (b / "summary.json").write_text(content)
    result = compare(str(a), str(b))
    assert result.returncode == errors.EXIT_USAGE
    [line] = [line for line in result.stderr.splitlines() if line.startswith("emodist: error:")]
    assert line == (f"emodist: error: {b / 'summary.json'}: {message}: not a summary emodist wrote (or edited since): "
                    "rerun or remove that run")


def test_a_summary_without_perf_numbers_compares_with_dashes(tmp_path):
    a = write_run(tmp_path / "a", "distilbert", 0.3)
    summary = json.loads((a / "summary.json").read_text())
    summary["perf"] = None
    (a / "summary.json").write_text(json.dumps(summary))
    result = compare(str(a), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    [row] = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert row["train_samples_per_s"] == "" and row["test_f1_macro"] == "0.3"


def test_a_run_named_twice_is_one_row_and_runs_of_one_name_keep_apart(tmp_path):
    """A link to a run used to add a second row; two runs called `run` shared (and lost) one confusion plot."""
    a = write_run(tmp_path / "p1" / "run", "distilbert", 0.3)
    b = write_run(tmp_path / "p2" / "run", "minilm", 0.2)
    (tmp_path / "alias").symlink_to(a)
    result = compare(str(a), str(tmp_path / "alias"), str(b), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert [r["run"] for r in rows] == ["p1/run", "p2/run"]
    assert sorted(p.name for p in (tmp_path / "out").glob("confusion-*.png")) == ["confusion-p1-run.png",
                                                                               "confusion-p2-run.png"]


def test_runs_whose_parents_share_names_too_keep_apart_and_so_do_their_plots(tmp_path):
    """/x/runs/a and /y/runs/a both showed as runs/a; b/c and b-c wrote one confusion-b-c.png (the second run's
    matrix shown as the first's)."""
    runs = [write_run(tmp_path / where, "minilm", f1) for where, f1 in (
        ("x/runs/a", 0.3), ("y/runs/a", 0.2), ("b/c", 0.25), ("d/c", 0.15), ("e/b-c", 0.1))]
    result = compare(*map(str, runs), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert [r["run"] for r in rows] == ["x/runs/a", "b/c", "y/runs/a", "d/c", "b-c"]  # best test F1 macro first
    assert sorted(p.name for p in (tmp_path / "out").glob("confusion-*.png")) == [
        "confusion-b-c-5.png", "confusion-b-c.png", "confusion-d-c.png", "confusion-x-runs-a.png",
        "confusion-y-runs-a.png"]


def test_runs_that_overwrite_moved_aside_are_left_out_of_a_directory_of_runs(tmp_path):
    """A superseded trial (sweep/000.replaced-<time>) was compared, ranked, and could win: its config written as
    winner-config.yaml."""
    sweep = tmp_path / "sweep"
    write_run(sweep / "000-lr=1e-3", "minilm", 0.3)
    aside = write_run(sweep / "000-lr=1e-3.replaced-20261207-060428", "minilm", 0.9)
    result = compare(str(sweep), "--rank-by", "dev.f1_macro", "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert [r["run"] for r in csv.DictReader((tmp_path / "out" / "comparison.csv").open())] == ["000-lr=1e-3"]
    assert "replaced" not in (tmp_path / "out" / "winner-config.yaml").read_text() + result.stdout
    named = compare(str(aside), "--output", str(tmp_path / "named"))  # named itself, it is compared
    assert named.returncode == 0, named.stderr
    shutil.rmtree(sweep / "000-lr=1e-3")
    only = compare(str(sweep))  # was "neither a run directory nor a directory of runs"
    assert only.returncode == errors.EXIT_USAGE and only.stderr.strip().splitlines()[-1] == (
        f"emodist: error: {sweep}: holds only runs that --overwrite moved aside (000-lr=1e-3.replaced-20261207-060428): "
        "name one of them to compare it")


def test_a_directory_without_runs_is_refused(tmp_path):
    result = compare(str(tmp_path))
    assert result.returncode == errors.EXIT_USAGE
    assert "neither a run directory nor a directory of runs" in result.stderr


def test_the_report_has_html_and_plots_that_are_drawn(tmp_path):
    study = tmp_path / "study"
    for variant, f1 in (("distilbert", 0.41), ("gemma-lora", 0.52), ("minilm", 0.33)):
        write_run(study / variant, variant, f1)
    assert compare(str(study)).returncode == 0
    out = study / "comparison"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["confusion-distilbert.png", "confusion-gemma-lora.png", "confusion-minilm.png",
                    "curves.png", "f1_vs_throughput.png", "per_label_f1.png"]
    for name in pngs:
        assert_drawn(out / name)
    page = (out / "report.html").read_text()
    assert page.count("<tr>") == 1 + 3 and page.count("<img ") == len(pngs)
    assert "<td>gemma-lora</td>" in page and "0.5200" in page
    assert "![curves](curves.png)" in (out / "report.md").read_text()


def test_compare_three_real_smoke_runs(smoke_runs, tmp_path):
    """The acceptance command on real runs of three variants: every file, one CSV row per run holding its
    summary.json numbers, the markdown table showing them, plots that are drawn."""
    runs = {variant: smoke_runs(variant)[0] for variant in ("distilbert", "minilm", "gemma-lora")}
    out = tmp_path / "report"
    result = compare(*map(str, runs.values()), "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".emodist-comparison", "comparison.csv", "report.md", "report.html", "f1_vs_throughput.png",
         "per_label_f1.png", "curves.png",
         *(f"confusion-{run.name}.png" for run in runs.values())])
    for png in out.glob("*.png"):
        assert_drawn(png)
    assert json.loads((out / ".emodist-comparison").read_text()) == {  # what the next one may replace, and of what
        "files": sorted(p.name for p in out.iterdir() if p.name != ".emodist-comparison"),
        "runs": sorted(str(run.resolve()) for run in runs.values())}

    with (out / "comparison.csv").open() as handle:
        rows = {row["variant"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(runs)
    table = (out / "report.md").read_text()
    for variant, run in runs.items():
        summary = json.loads((run / "summary.json").read_text())
        row, perf = rows[variant], summary["perf"]
        assert row["run"] == run.name
        assert float(row["test_f1_macro"]) == summary["test"]["f1_macro"]
        assert float(row["dev_f1_micro"]) == summary["dev"]["f1_micro"]
        assert float(row["train_tokens_per_s"]) == perf["train_tokens_per_s"]
        assert float(row["padding_efficiency"]) == perf["padding_efficiency"]
        assert float(row["step_seconds_median"]) == perf["step_seconds_median"]
        assert float(row["peak_memory_gib"]) == perf["peak_memory_bytes"] / 2**30
        line = next(line for line in table.splitlines() if line.startswith(f"| {run.name} |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert f"{summary['test']['f1_macro']:.4f}" in cells and f"{perf['train_tokens_per_s']:,.0f}" in cells
        assert f"{perf['peak_memory_bytes'] / 2**30:.2f}" in cells


def test_the_readme_s_report_directory_is_never_committed():
    """README writes comparisons to reports/: like runs/, git leaves it out."""
    for path in ("reports/ab/report.md", "runs/x/summary.json"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


def test_a_wandb_group_without_a_login_is_refused_in_one_line(tmp_path):
    """`--wandb-group` needs the wandb server and a key: without a key, one line that says how to log in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"HOME": str(tmp_path), "WANDB_BASE_URL": "http://127.0.0.1:9"}  # no ~/.netrc, no server either
    result = subprocess.run([sys.executable, str(ROOT / "launch" / "compare.py"), "--wandb-group", "study-7"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.splitlines() == [  # wandb's "No API key configured" read as if the server had not answered
        "emodist: error: --wandb-group study-7: no wandb API key here (WANDB_API_KEY or `wandb login`): log in, or "
        "compare the run directories"]
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, no empty runs/ left behind
