"""End to end: the real `accelerate launch launch/train.py` in a subprocess, then the files it wrote."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import ROOT, assert_drawn, launch, read_metrics, read_summary, rescore, rescore_dev, wandb_run

from emodist import data
from emodist.config import DataConfig, variants
from emodist.runtime import errors, files

SUMMARY_KEYS = ["variant", "base_model", "smoke", "num_processes", "distributed_type", "mixed_precision",
                "params", "dev", "test", "perf"]
METRIC_KEYS = ["f1_micro", "f1_macro", "precision_micro", "recall_micro", "subset_accuracy", "jaccard_samples",
               "per_label"]
PERF_KEYS = ["train_samples_per_s", "train_tokens_per_s", "peak_memory_bytes", "planned_peak_bytes", "train_seconds"]


@pytest.fixture(scope="module", params=variants.names())
def smoke_run(request, smoke_runs):
    return request.param, *smoke_runs(request.param)


def test_smoke_run_writes_the_run_directory(smoke_run):
    variant, run_dir, result = smoke_run
    summary = read_summary(run_dir)
    assert [k for k in SUMMARY_KEYS if k not in summary] == []
    for split in ("dev", "test"):
        assert [k for k in METRIC_KEYS if k not in summary[split]] == []
        assert sorted(summary[split]["per_label"]) == sorted(data.SYNTHETIC_CUES)
    assert [k for k in PERF_KEYS if k not in summary["perf"]] == []
    assert summary["variant"] == variant and summary["smoke"] is True
    assert (summary["num_processes"], summary["distributed_type"]) == (1, "NO")
    assert 0 < summary["params"]["trainable"] <= summary["params"]["total"]
    perf = summary["perf"]
    assert perf["peak_memory_bytes"] > 0 and perf["train_seconds"] > 0
    assert perf["planned_peak_bytes"] == sum(perf["memory_plan"].values()) > 0  # every run plans first
    assert 0 < perf["train_tokens_per_s"] <= perf["train_padded_tokens_per_s"]

    # resumable checkpoints: the last two kept, and the one of the best dev score, each complete
    state = json.loads((run_dir / "checkpoints" / "step-512" / "state.json").read_text())
    assert state["step"] == 512 and state["best"]["metric"] == "eval/f1_micro"
    kept = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert kept == {"step-500", "step-512", f"step-{state['best']['step']}"}  # a new best dev score is saved
    # dev evaluated 8 times (train.eval_every_steps unset): the curves have points to draw
    assert [r["step"] for r in read_metrics(run_dir) if "eval/loss" in r] == list(range(64, 513, 64))
    # every file as open() would make it, every directory as mkdir: safetensors' own -rw------- and
    # tempfile's drwx------ would hide models from a shared group
    mode = {True: 0o666 & ~files.umask(), False: 0o777 & ~files.umask()}
    assert {f.relative_to(run_dir): oct(f.stat().st_mode & 0o777) for f in run_dir.rglob("*")
            if f.stat().st_mode & 0o777 != mode[f.is_file()]} == {}
    # the terminal: banner, progress lines, final tables
    assert "emodist" in result.stdout and "step 10/512 (1%)" in result.stdout
    assert "Results" in result.stdout and "Throughput and memory" in result.stdout
    # the per-label table: every label once, best test F1 (at the tuned thresholds) first
    table = result.stdout.split("Per label (test, tuned thresholds), best F1 first")[1].split("Throughput and")[0]
    rows = [line.split("│") for line in table.splitlines() if line.count("│") == 7]
    rows = [[cell.strip() for cell in row[1:-1]] for row in rows if row[1].strip() in summary["labels"]]
    assert sorted(r[0] for r in rows) == sorted(summary["labels"])
    assert [float(r[1]) for r in rows] == sorted((float(r[1]) for r in rows), reverse=True)
    assert {r[0]: float(r[1]) for r in rows} == {
        k: round(v["f1"], 4) for k, v in summary["test_tuned"]["per_label"].items()}
    assert {r[0]: int(r[4]) for r in rows} == {k: v["support"] for k, v in summary["test"]["per_label"].items()}
    assert {r[0]: float(r[5]) for r in rows} == summary["thresholds"]["per_label"]


def test_a_log_file_gets_plain_progress_lines(smoke_run):
    """stdout is a pipe here, as in CI or a SLURM output file: no escape codes, one line per logged step."""
    _, run_dir, result = smoke_run
    assert "\x1b[" not in result.stdout
    progress = [line for line in result.stdout.splitlines() if re.match(r"step \d+/512 ", line)]
    pattern = (r"step (\d+)/512 \(\d+%\)  epoch [\d.]+  loss [\d.]+  lr [\d.e+-]+  [\d.]+ samples/s  "
               r"[\d,]+ tokens/s  mem [\d,]+/[\d,]+ MiB \(peak\)  ETA \d+:\d\d:\d\d")
    assert [int(re.fullmatch(pattern, line).group(1)) for line in progress] == list(range(10, 511, 10)) + [512]
    banner = result.stdout.split("Results")[0]
    for row in ("parameters", "processes", "precision", "batch", "schedule"):
        assert f"│ {row} " in banner


def test_throughput_memory_and_phases_are_plausible(smoke_run):
    variant, run_dir, result = smoke_run
    perf = read_summary(run_dir)["perf"]
    assert 0 < perf["train_tokens_per_s"] <= perf["train_padded_tokens_per_s"]
    assert 0 < perf["padding_efficiency"] <= 1
    assert perf["padding_efficiency"] == pytest.approx(perf["train_tokens"] / perf["train_padded_tokens"])
    assert perf["train_samples"] == 512 * 16  # steps x global batch: every example counted once
    assert perf["train_samples_per_s"] == pytest.approx(perf["train_samples"] / perf["train_seconds"])
    assert 0 < perf["step_seconds_median"] <= perf["step_seconds_p90"] < perf["train_seconds"]
    assert perf["step_seconds_median"] < 2 * perf["train_seconds"] / 512  # the typical step, not the slow first
    phases = perf["phase_seconds"]
    assert sorted(phases) == ["eval", "load", "save", "tokenize", "train"] and min(phases.values()) >= 0
    assert phases["train"] == perf["train_seconds"] and phases["load"] > 0 and phases["eval"] > 0
    assert perf["memory_kind"] == "cpu_rss" and perf["peak_memory_reserved_bytes_per_rank"] is None
    assert perf["peak_memory_bytes"] > 100 * 2**20  # a Python process with torch loaded
    # the steps' own peak, which the plan predicts (loading apart), is in the summary and the end table
    assert 100 * 2**20 < perf["training_peak_memory_bytes"] <= perf["peak_memory_bytes"]
    assert perf["training_peak_memory_bytes_per_rank"] == [perf["training_peak_memory_bytes"]]
    planned, steps = perf["planned_peak_bytes"], perf["training_peak_memory_bytes"]
    assert f"│ memory plan │ {planned / 2**20:,.0f} MiB: {planned / steps:.2f} of the steps' peak" in " ".join(
        result.stdout.split())
    # no GPU: MFU against this machine's GEMMs at the model's own shapes, measured once per cache and shapes
    assert perf["peak_source"] == "measured GEMMs" and perf["peak_tflops_per_s"] > 0
    assert perf["mfu"] == pytest.approx(perf["train_tflops_per_s"] / perf["peak_tflops_per_s"])
    assert 0 < perf["mfu"] < 1  # a tiny model's steps are mostly overhead
    assert f"(MFU {perf['mfu']:.1%} of {perf['peak_tflops_per_s']:.3g}: measured GEMMs)" in result.stdout
    # FLOPs per token: 6N and more for a full fine-tune (N: parameters but the embedding table); LoRA skips
    # the weight gradients of the frozen base, so between 4N and 6N
    summary = read_summary(run_dir)
    base = json.loads((run_dir / "smoke-base" / "config.json").read_text())
    hidden = base.get("hidden_size") or base["dim"]
    matmul = summary["params"]["total"] - base["vocab_size"] * hidden
    if summary["method"] == "full":
        assert perf["train_flops_per_token"] > 6 * matmul
    else:
        assert 4 * matmul < perf["train_flops_per_token"] < 6 * matmul
    train_records = [r for r in read_metrics(run_dir) if "train/loss" in r]
    for record in train_records:
        assert record["perf/train_samples_per_s"] > 0 and record["perf/train_tokens_per_s"] > 0
        assert 0 < record["perf/memory_bytes"] <= record["perf/peak_memory_bytes"]


def test_the_offline_wandb_run_holds_what_was_logged(smoke_run):
    """No WANDB_MODE and no API key: the run logged offline into its run directory (read back from the file)."""
    variant, run_dir, result = smoke_run
    assert "emodist: no wandb API key" in result.stdout
    summary = read_summary(run_dir)
    tracked = wandb_run(run_dir)
    assert tracked["run"]["project"] == "emodist" and tracked["run"]["job_type"] == variant
    assert tracked["run"]["name"].startswith(f"{variant}-")
    assert {variant, "smoke", summary["method"]} <= set(tracked["run"]["tags"])
    final = tracked["summary"]
    assert final["eval/f1_macro"] == summary["dev"]["f1_macro"]
    assert final["test/f1_micro"] == summary["test"]["f1_micro"]
    assert final["perf/train_tokens_per_s"] == summary["perf"]["train_tokens_per_s"]
    assert {k.split("/")[-1]: v for k, v in final.items() if k.startswith("test/per_label_f1/")} == {
        label: scores["f1"] for label, scores in summary["test"]["per_label"].items()}
    logged = [{k: v for k, v in r.items() if not k.startswith("_")} for r in tracked["history"]]
    assert logged == read_metrics(run_dir)  # every metrics.jsonl record, in order, against its step
    files = next((run_dir / "wandb").glob("offline-run-*/files"))
    assert json.loads((files / "summary.json").read_text()) == summary


def test_the_run_draws_its_plots(smoke_run):
    _, run_dir, _ = smoke_run
    pngs = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert pngs == ["confusion.png", "curves.png", "per_label_f1.png"]
    for name in pngs:
        assert_drawn(run_dir / "plots" / name)


def test_smoke_run_learns(smoke_run):
    variant, run_dir, _ = smoke_run
    losses = [r["train/loss"] for r in read_metrics(run_dir) if "train/loss" in r]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])
    summary = read_summary(run_dir)
    # measured: dev f1_micro 0.98-1.00 for every architecture
    assert summary["dev"]["f1_micro"] >= 0.8
    steps = [r["step"] for r in read_metrics(run_dir) if "train/loss" in r]
    assert steps == sorted(steps) and steps[-1] == summary["train"]["steps"] == 512


def test_exported_model_reloads_with_the_reported_dev_scores(smoke_run):
    variant, run_dir, _ = smoke_run
    summary = read_summary(run_dir)
    model_dir = run_dir / "model"
    if summary["method"] == "full":
        assert list(model_dir.glob("model-0000*-of-*.safetensors")) and (model_dir / "model.safetensors.index.json").exists()
    else:
        assert (model_dir / "adapter_model.safetensors").exists()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(data.SYNTHETIC_CUES)}

    rescored, model = rescore_dev(run_dir)
    if summary["quantization"] == "nf4":
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert rescored["f1_micro"] == pytest.approx(summary["dev"]["f1_micro"], abs=1e-6)
    assert rescored["f1_macro"] == pytest.approx(summary["dev"]["f1_macro"], abs=1e-6)
    # the same model computing the same batches: the loss too, not only the predictions near no threshold
    assert rescored["loss"] == pytest.approx(summary["dev"]["loss"], rel=1e-6)


def test_thresholds_are_tuned_on_dev_and_travel_with_the_model(smoke_run):
    """thresholds.json in the run and in model/; the reloaded model at those thresholds reproduces
    `test_tuned` (tests/test_thresholds.py checks the tuning itself)."""
    _, run_dir, _ = smoke_run
    summary = read_summary(run_dir)
    saved = json.loads((run_dir / "thresholds.json").read_text())
    assert saved == json.loads((run_dir / "model" / "thresholds.json").read_text()) == summary["thresholds"]
    assert sorted(saved["per_label"]) == sorted(summary["labels"])
    assert all(0.02 <= t <= 0.98 for t in saved["per_label"].values())
    rescored, _ = rescore(run_dir, "test", tuned=True)
    for key in ("f1_micro", "f1_macro", "precision_micro", "recall_micro"):
        assert rescored[key] == pytest.approx(summary["test_tuned"][key], abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, nothing lost


def test_unknown_variant_is_one_line():
    result = launch("--variant", "nope", accelerate=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "emodist: error: unknown variant 'nope': choose one of " + ", ".join(variants.names())]


def test_an_abbreviated_flag_is_refused_not_taken_for_a_flag():
    """argparse read `--output` as --output-dir: after slurm/launch.sh's own --output-dir, it silently won."""
    result = launch("--variant", "distilbert", "--smoke", "--output", "elsewhere", accelerate=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "train.py: error: unrecognized arguments: --output")


def test_misspelt_config_key_is_one_line(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("optim:\n  lr: 2.0e-4\n  warmup_ratoi: 0.1\n")
    result = launch("--variant", "distilbert", "--config", str(file), accelerate=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"emodist: error: {file}:3: unknown key 'optim.warmup_ratoi' (did you mean optim.warmup_ratio?)"]


def test_label_id_out_of_range_names_file_and_line(tmp_path, cache_dir):
    from test_data import write_goemotions

    directory = write_goemotions(tmp_path / "ge")
    with (directory / "train.tsv").open("a") as handle:
        handle.write("one more\t0,9\tzz\n")
    result = launch("--variant", "minilm", "--data-dir", str(directory), "--output-dir", str(tmp_path / "run"),
                    accelerate=False)
    assert result.returncode == errors.EXIT_DATA == 65
    assert result.stderr.strip().splitlines()[-1] == (
        f"emodist: error: {directory / 'train.tsv'}:4: label id 9 is out of range: emotions.txt names 4 labels "
        "(ids 0-3)")


def test_a_peak_override_that_is_no_number_is_refused_before_training(tmp_path, cache_dir):
    """It was read once training had ended: the run failed at its finish, every resume the same way."""
    result = launch("--variant", "distilbert", "--smoke", "--output-dir", str(tmp_path / "run"), "train.max_steps=2",
                    accelerate=False, env={"EMODIST_PEAK_TFLOPS": "989TF"})
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.strip().splitlines()[-1].startswith("emodist: error: EMODIST_PEAK_TFLOPS=989TF: not a "
                                                             "positive number of TFLOP/s")
    assert "step 1/" not in result.stdout and not (tmp_path / "run").exists()


def test_a_test_split_that_repeats_train_texts_is_warned_of_and_counted(tmp_path, cache_dir):
    """A test split copied from train scored high with no word (a silent wrong result)."""
    from test_data import write_goemotions

    directory = write_goemotions(tmp_path / "ge", {
        "train": ["I love it\t0,2\ta1", "So angry right now\t1\ta2", "ok then\t3\ta3"],
        "dev": ["What a joy\t2\tb1", "whatever\t3\tb2"],
        "test": ["I love it\t0,2\tc1", "Great work\t0\tc2"]})
    run_dir = tmp_path / "run"
    result = launch("--variant", "distilbert", "--smoke", "--data-dir", str(directory), "--output-dir", str(run_dir),
                    "train.max_steps=1", accelerate=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("emodist: warning: 1 of 2 test texts (50.0%) are also in train, word for word: the model trained on them, "
            "so their scores read high; keep each text in one split") in " ".join(result.stdout.split())
    assert re.search(r"│ also in train\s+│ 0 dev and 1 test texts, word for word", result.stdout)
    splits = read_summary(run_dir)["splits"]
    assert (splits["dev"]["in_train"], splits["test"]["in_train"], "in_train" in splits["train"]) == (0, 1, False)


def test_hub_data_set_offline_is_one_line_pointing_to_local_data(tmp_path, cache_dir):
    result = launch("--variant", "minilm", "--output-dir", str(tmp_path / "run"), accelerate=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("emodist: error: data set 'google-research-datasets/go_emotions' is on the "
                           "HuggingFace hub, which is unreachable from here")
    assert "--data-dir DIR" in last and "--smoke" in last


def test_hub_model_offline_is_one_line_pointing_to_local_models(tmp_path, cache_dir):
    from test_data import write_goemotions

    directory = write_goemotions(tmp_path / "ge")
    result = launch("--variant", "distilbert", "--data-dir", str(directory), "--output-dir", str(tmp_path / "run"),
                    accelerate=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("emodist: error: model 'distilbert-base-uncased' is on the HuggingFace hub")
    assert "local model directory" in last and "--smoke" in last
    # the run directory this refused start made is gone: each try left an unfinished run (config.yaml, marker)
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()  # one that was there before stays, as it was
    result = launch("--variant", "distilbert", "--data-dir", str(directory), "--output-dir", str(tmp_path / "mine"),
                    accelerate=False)
    assert result.returncode == 2 and (tmp_path / "mine").is_dir() and not (tmp_path / "mine" / ".emodist-lock").exists()


@pytest.mark.parametrize("stop", [KeyboardInterrupt, errors.NoSpace])
def test_a_start_stopped_while_it_loads_removes_the_run_directory_it_made(tmp_path, cache_dir, monkeypatch, stop):
    """A Ctrl-C while the model loaded said "nothing was saved" and left runs/<variant>-<date>-<time>/ with its
    config.yaml, marker and smoke base, which compare then listed as an unfinished run (found by a new user)."""
    from conftest import train_in_process

    from emodist import models

    def interrupted(*args, **kwargs):
        raise stop("no space left on the disk of the cache" if stop is errors.NoSpace else "")

    monkeypatch.setattr(models, "build_model", interrupted)
    code, _, stderr = train_in_process("--variant", "minilm", "--smoke", "--output-dir", str(tmp_path / "run"))
    assert code == (130 if stop is KeyboardInterrupt else errors.EXIT_NO_SPACE), stderr[-3000:]
    assert not (tmp_path / "run").exists()


def test_a_max_length_beyond_the_model_s_positions_is_one_line(tmp_path, cache_dir):
    """It used to fail in the first batch with a long text, deep in the embeddings (internal error); then it was
    refused only once `--overwrite` had moved the run in --output-dir aside."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".emodist-run").write_text("{}")
    (run_dir / "summary.json").write_text('{"variant": "an earlier run"}')
    result = launch("--variant", "distilbert", "--smoke", "--output-dir", str(run_dir), "data.max_length=256",
                    "--overwrite", accelerate=False)
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.strip().splitlines()[-1] == (
        "emodist: error: data.max_length=256: the model reads at most 128 tokens (its max_position_embeddings): set "
        "data.max_length=128 or less")
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and (run_dir / "summary.json").is_file()


def test_a_run_is_never_replaced_silently(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".emodist-run").write_text("{}")  # an emodist run directory (tests/test_rundir.py: the others)
    (run_dir / "summary.json").write_text('{"variant": "an earlier run"}')
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    args = ["--variant", "distilbert", "--smoke", "--output-dir", str(run_dir), "train.max_steps=2"]
    refused = launch(*args, accelerate=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"emodist: error: --output-dir {run_dir} already holds a run (metrics.jsonl, summary.json): continue it "
        "with --resume auto, choose a new --output-dir, or pass --overwrite to move it aside")
    assert (run_dir / "summary.json").read_text() == '{"variant": "an earlier run"}'

    replaced = launch(*args, "--overwrite", accelerate=False)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert read_summary(run_dir)["train"]["steps"] == 2
    assert read_metrics(run_dir)[-1]["step"] == 2 and {"step": 1} not in read_metrics(run_dir)  # a new file
    [aside] = tmp_path.glob("run.replaced-*")
    assert (aside / "summary.json").read_text() == '{"variant": "an earlier run"}'


def test_list_variants():
    result = launch("--list-variants", accelerate=False)
    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == variants.names()


def test_a_listing_read_by_head_ends_quietly():
    """`launch/train.py --list-keys | head -1`: the reader has gone when the listing is written (here its end
    of the pipe is closed before the start); no traceback, exit 0."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        listing = subprocess.run([sys.executable, "launch/train.py", "--list-keys"], cwd=ROOT, stdout=write_end,
                                 stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert (listing.returncode, listing.stderr) == (0, "")


# ---------------------------------------------------------------------------------------------------
# Label groupings and imbalance


@pytest.mark.parametrize("grouping, groups", [("ekman", 7), ("sentiment", 4)])
def test_a_grouping_trains_with_its_labels(tmp_path, cache_dir, grouping, groups):
    from test_data import write_goemotions_28

    directory = write_goemotions_28(tmp_path / "ge")
    run_dir = tmp_path / "run"
    weighted = ["train.pos_weight=balanced"] if grouping == "ekman" else []
    # the other one trains with the asymmetric loss, thresholds tuned for samples-Jaccard
    other_loss = [] if weighted else ["train.loss=asl", "train.asl_gamma_neg=2", "train.threshold_objective=jaccard_samples"]
    result = launch("--variant", "distilbert", "--smoke", "--data-dir", str(directory), "--output-dir", str(run_dir),
                    f"data.grouping={grouping}", "train.max_steps=40", *weighted, *other_loss, accelerate=False)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(run_dir)
    loss = "BCE" if weighted else "ASL (gamma+ 0, gamma- 2, clip 0.05)"
    assert re.search(r"│ loss\s+│ " + re.escape(loss), result.stdout)  # the banner's row
    assert summary["thresholds"]["objective"] == ("f1_macro" if weighted else "jaccard_samples")
    assert summary["dev_tuned"]["num_examples"] == summary["dev"]["num_examples"]
    assert "(thresholds tuned on dev for" in result.stdout
    assert summary["dataset"] == f"goemotions-{grouping}" and len(summary["labels"]) == groups
    assert len(json.loads((run_dir / "model" / "config.json").read_text())["id2label"]) == groups
    assert len(summary["test_tuned"]["per_label"]) == len(summary["thresholds"]["per_label"]) == groups
    if weighted:  # the banner shows the weights the loss uses: negatives / positives of the grouped train split
        targets = data.load(DataConfig(dataset="goemotions", data_dir=str(directory), grouping=grouping),
                            seed=42).splits["train"].targets
        ratio = np.clip((len(targets) - targets.sum(0)) / targets.sum(0), 1, 10)
        assert f"positives weighted {ratio.min():.3g}-{ratio.max():.3g} (balanced, cap 10)" in result.stdout


def test_balanced_positive_weights_are_capped_negatives_over_positives():
    import torch

    from emodist import config
    from emodist.train import optim

    targets = np.zeros((100, 3), dtype=np.float32)
    targets[:50, 0] = 1  # 50 of 100: weight 1
    targets[:4, 1] = 1  # 4 of 100: 96/4 = 24, capped at 10
    targets[:20, 2] = 1  # 20 of 100: 4
    loaded = data.EmotionData("t", ["a", "b", "c"], {"train": data.Split(["x"] * 100, targets)})
    cfg = config.load("distilbert", overrides=["train.pos_weight=balanced"])
    assert optim.positive_weights(cfg, loaded, torch.device("cpu")).tolist() == [1.0, 10.0, 4.0]
    assert optim.positive_weights(config.load("distilbert"), loaded, torch.device("cpu")) is None


@pytest.mark.parametrize(("schedule", "hf_name"), [("linear", "linear"), ("cosine", "cosine"),
                                                   ("constant", "constant_with_warmup")])
@pytest.mark.parametrize(("warmup", "total"), [(6, 100), (0, 10), (3, 3), (1, 2)])
def test_the_learning_rate_schedules_are_transformers_own(schedule, hf_name, warmup, total):
    """emodist's LambdaLR curves against transformers.get_scheduler's, tick by tick (and past the end)."""
    import torch
    from transformers import get_scheduler

    from emodist import config
    from emodist.train.optim import build_scheduler
    from emodist.train.plan import Plan

    def rates(make) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler, seen = make(optimizer), []
        for _ in range(total + 3):
            seen.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return seen

    optim = config.load("distilbert", overrides=[f"optim.schedule={schedule}"]).optim
    plan = Plan(batches_per_epoch=total, accumulation=1, steps_per_epoch=total, total_steps=total,
                warmup_steps=warmup, eval_every=0)
    ours = rates(lambda o: build_scheduler(o, optim, plan, num_processes=1))
    theirs = rates(lambda o: get_scheduler(hf_name, o, num_warmup_steps=warmup, num_training_steps=total))
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_under_accelerate_launch_q_emodist_s_line_is_the_last_one():
    """`accelerate launch -q` (README): a refusal is one line, emodist's, at the end: no launcher traceback
    repeating it, no DeepSpeed accelerator notice (tests/test_resume.py holds the stop signals' lines)."""
    result = launch("--variant", "minilm", "--smoke", "nosuch.key=1", config_file="cpu.yaml", launcher_args=("-q",))
    assert result.returncode == 1  # accelerate reports any failure as 1 (README: exit codes)
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "emodist: error: override 'nosuch.key=1': unknown key 'nosuch.key' (see `launch/train.py " \
                        "--list-keys`)"
    assert result.stderr.count("emodist:") == 1 and "Traceback" not in result.stderr


def test_a_run_on_a_cpu_prints_no_deepspeed_accelerator_notice(smoke_runs):
    _, result = smoke_runs("distilbert")  # save_pretrained imports DeepSpeed through accelerate
    assert "Setting accelerator to CPU" not in result.stderr and "Traceback" not in result.stderr


def test_a_qlora_run_on_a_cpu_steps_its_paged_optimizer_unpaged_without_a_warning(smoke_runs):
    """mistral-qlora's preset asks for paged_adamw_8bit; paging needs CUDA, so on a CPU the run steps
    bitsandbytes' non-paged AdamW8bit (what bitsandbytes falls back to) instead of warning once per run."""
    import torch

    from emodist.config import OptimConfig
    from emodist.train.optim import build_optimizer

    model = torch.nn.Linear(4, 2)
    paged, unpaged = (type(build_optimizer(model, OptimConfig(name="paged_adamw_8bit"), [], paged=p))
                      for p in (True, False))
    assert (paged.__name__, unpaged.__name__) == ("PagedAdamW8bit", "AdamW8bit")
    _, result = smoke_runs("mistral-qlora")
    assert "Paged optimizers are not supported" not in result.stderr and "Traceback" not in result.stderr
