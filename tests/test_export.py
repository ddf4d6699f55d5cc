"""launch/export.py on real smoke runs: a standalone model directory that transformers.pipeline loads and
scores as launch/predict.py does, its model card, the adapter of a QLoRA run, the upload's refusals."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, error_lines, read_summary

from emodist import config, data
from emodist.runtime import files
from emodist.runtime.errors import UsageError
from emodist.serve import card as cards
from emodist.serve import export

PUSH_ENV = {"HF_TOKEN": None, "HUGGING_FACE_HUB_TOKEN": None, "HF_TOKEN_PATH": "/nonexistent/emodist-test/token"}
"""No hub token: neither in the environment nor the file `hf auth login` writes."""
MERGED_QLORA_GAP = (0.1, 0.01)
"""How far a merged QLoRA export's scores may move from its adapter's, at most and on average (measured on
the smoke run's first 64 test texts: 0.046 and 0.0034; on the smoke set of 2026-12-07, whose dev and test no
longer repeat train texts, 0.040 and 0.0034; every text given the same labels both times)."""


def run_script(name: str, *args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    import os

    environ = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([sys.executable, str(ROOT / "launch" / name), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=environ)


@pytest.fixture(scope="module")
def exports(smoke_runs, tmp_path_factory):
    """exports(variant) -> (run_dir, export_dir): each smoke run exported once."""
    done = {}

    def get(variant: str):
        if variant not in done:
            run_dir, _ = smoke_runs(variant)
            out = tmp_path_factory.mktemp("exports") / variant
            result = run_script("export.py", str(run_dir), "--output", str(out))
            assert result.returncode == 0, result.stderr[-3000:]
            done[variant] = run_dir, out
        return done[variant]

    return get


@pytest.mark.parametrize("variant", ["distilbert", "gemma-lora"])  # a full model; LoRA merged into its base
def test_the_pipeline_scores_the_export_as_predict_does(exports, variant):
    from transformers import AutoTokenizer, pipeline

    run_dir, out = exports(variant)
    assert not (out / "adapter_config.json").exists()  # a plain model: merged
    cfg = config.load(config_file=str(run_dir / "config.yaml"))
    texts = data.load(cfg.data, seed=cfg.train.seed).splits["test"].texts[:24]
    texts.append(" ".join(texts))  # far longer than the data.max_length the run trained at: both read that many
    result = run_script("predict.py", str(out), *texts, "--precision", "fp32")  # the pipeline's float32
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"1 text(s) longer than {cfg.data.max_length} tokens were read up to that length" in result.stderr
    ours = [json.loads(line)["scores"] for line in result.stdout.splitlines()]
    assert AutoTokenizer.from_pretrained(out).model_max_length == cfg.data.max_length == 32
    theirs = pipeline("text-classification", model=str(out), top_k=None, device="cpu")(texts, truncation=True)
    labels = list(ours[0])
    assert labels == read_summary(run_dir)["labels"]
    pipe = np.array([[{s["label"]: s["score"] for s in row}[label] for label in labels] for row in theirs])
    np.testing.assert_allclose(np.array([[row[label] for label in labels] for row in ours]), pipe, atol=1e-5)
    assert pipe.max() > 0.5  # real predictions, not all-zero agreement


def test_the_model_card_carries_the_runs_scores_and_thresholds(exports):
    run_dir, out = exports("distilbert")
    summary = read_summary(run_dir)
    card = (out / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] == "text-classification"
    # a smoke run's weights are random: the hub would list it as a fine-tune of distilbert-base-uncased
    assert "base_model" not in meta and "a tiny randomly initialised model of `distilbert-base-uncased`'s" in card
    real = cards.model_card({**summary, "smoke": False}, config.load(config_file=str(run_dir / "config.yaml")), "x")
    assert yaml.safe_load(real.split("---")[1])["base_model"] == summary["base_model"]
    assert "Trained with emodist from `distilbert-base-uncased`" in real
    metrics = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["F1 micro (tuned thresholds)"] == round(summary["test_tuned"]["f1_micro"], 4)
    assert metrics["F1 macro (threshold 0.5)"] == round(summary["test"]["f1_macro"], 4)
    rows = {cells[0]: cells[1] for line in card.splitlines()
            if len(cells := [c.strip() for c in line.strip("|").split("|")]) == 3 and cells[0] in summary["labels"]}
    # each label's threshold as thresholds.json holds it (bootstrap means fall between the grid's values)
    assert {label: float(cut) for label, cut in rows.items()} == summary["thresholds"]["per_label"]
    assert "Intended use and limits" in card and "a --smoke run" in card
    assert "classify([\"I can't believe it worked!\"], truncation=True)" in card  # reads data.max_length tokens
    assert "512 steps (8 epochs) over 1,024 training examples;" in card  # what was trained, not the config's plan
    assert json.loads((out / "thresholds.json").read_text()) == json.loads((run_dir / "model" / "thresholds.json").read_text())
    # as open() and mkdir would make them: tempfile's drwx------ kept a shared group out of every export
    modes = {path.relative_to(out.parent): oct(path.stat().st_mode & 0o777) for path in (out, *out.rglob("*"))}
    assert set(modes.values()) == {oct(0o777 & ~files.umask()), oct(0o666 & ~files.umask())}, modes
    exported = json.loads((out / "config.json").read_text())
    assert exported["id2label"] == {str(i): label for i, label in enumerate(summary["labels"])}
    assert exported["problem_type"] == "multi_label_classification"


def test_a_qlora_export_keeps_its_adapter_beside_the_merged_model(exports):
    _, out = exports("mistral-qlora")
    assert (out / "adapter" / "adapter_config.json").is_file()
    merged = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in merged and merged["problem_type"] == "multi_label_classification"


def test_a_qlora_export_scores_as_its_4bit_adapter_does_up_to_the_rounding_of_4_bits(exports):
    """The merged model (the adapter merged into the bfloat16 base, unquantized) against the run's own
    model (the adapter on the 4-bit base it trained against): the kept adapter/ is the run's, bit for bit;
    the merged model's scores move by the 4-bit rounding only, and choose the same labels nearly always."""
    run_dir, out = exports("mistral-qlora")
    cfg = config.load(config_file=str(run_dir / "config.yaml"))
    texts = data.load(cfg.data, seed=cfg.train.seed).splits["test"].texts[:64]

    def scores(model_dir) -> tuple[np.ndarray, list[list[str]]]:
        result = run_script("predict.py", str(model_dir), *texts, "--precision", "fp32")  # no autocast's rounding
        assert result.returncode == 0, result.stderr[-3000:]
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        return np.array([list(row["scores"].values()) for row in rows]), [row["labels"] for row in rows]

    adapter, adapter_labels = scores(run_dir / "model")
    kept, kept_labels = scores(out / "adapter")
    merged, merged_labels = scores(out)
    np.testing.assert_array_equal(kept, adapter)
    assert kept_labels == adapter_labels
    gap = np.abs(merged - adapter)
    assert 0 < gap.max() < MERGED_QLORA_GAP[0] and gap.mean() < MERGED_QLORA_GAP[1], (gap.max(), gap.mean())
    same = np.mean([a == m for a, m in zip(adapter_labels, merged_labels, strict=True)])
    assert same >= 0.9, same


def test_push_dry_run_lists_and_refusals_come_before_anything_is_sent(exports):
    run_dir, out = exports("distilbert")
    result = run_script("export.py", str(run_dir), "--output", str(out), "--push-to-hub", "me/emotions", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("would upload to me/emotions: README.md, config.json")
    no_token = ["emodist: error: --push-to-hub me/emotions: no token: set HF_TOKEN (a write token from "
                "huggingface.co/settings/tokens) or run `hf auth login`, or use --dry-run to see what would be uploaded"]
    result = run_script("export.py", str(run_dir), "--output", str(out), "--push-to-hub", "me/emotions", env=PUSH_ENV)
    assert error_lines(result) == no_token
    fresh = out.with_name(out.name + "-fresh")  # refused before the export is written: nothing left behind
    result = run_script("export.py", str(run_dir), "--output", str(fresh), "--push-to-hub", "me/emotions", env=PUSH_ENV)
    assert error_lines(result) == no_token and not fresh.exists()
    result = run_script("export.py", str(run_dir), "--output", str(out), "--push-to-hub", "me/emotions",
                        env={"HF_TOKEN": "hf_x", "HF_HUB_OFFLINE": "1"})
    assert error_lines(result) == [f"emodist: error: --push-to-hub me/emotions: the HuggingFace hub is unreachable "
                                   f"from here: push from a machine with network access (the export is complete in {out})"]


def test_a_push_sends_only_an_export_of_the_run_as_it_is_now(exports, tmp_path):
    """An existing --output holding a README.md was pushed as it was: a repository (.git included), a home
    directory (id_rsa), or an export of an earlier finish of the run."""
    import shutil

    run_dir, out = exports("distilbert")

    def dry_run(folder: Path, run: Path = run_dir) -> subprocess.CompletedProcess:
        return run_script("export.py", str(run), "--output", str(folder), "--push-to-hub", "me/emotions", "--dry-run")

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / "README.md").write_text("mine")
    assert error_lines(dry_run(home)) == [
        f"emodist: error: {home}: holds .ssh, which no export does: --push-to-hub sends an export as it is, so only a "
        f"directory launch/export.py wrote: export {run_dir} into a new --output and push that"]
    stale = tmp_path / "stale"
    shutil.copytree(out, stale)
    tuned = json.loads((stale / "thresholds.json").read_text())
    label = next(iter(tuned["per_label"]))
    tuned["per_label"][label] = round(1 - tuned["per_label"][label], 4)  # the thresholds of another finish
    (stale / "thresholds.json").write_text(json.dumps(tuned))
    stale_message = [f"emodist: error: {stale}: not an export of {run_dir} as it is now: its thresholds.json is not "
                     "the run's model/thresholds.json (an export of an earlier finish, or of another run): export the "
                     "run into a new --output and push that"]
    assert error_lines(dry_run(stale)) == stale_message
    # trained further, the run's tuned thresholds (on a grid of 0.01) often come out the same: the step-512 weights
    # were pushed as the step-640 model (found by a new user); each finish records itself there
    tuned = json.loads((out / "thresholds.json").read_text())
    assert tuned["finished"].startswith("step ") and tuned == json.loads((run_dir / "model" / "thresholds.json").read_text())
    (stale / "thresholds.json").write_text(json.dumps({**tuned, "finished": "step 512, 2026-12-07T10:00:00"}))
    assert error_lines(dry_run(stale)) == stale_message
    for flags, asked in ((["--merge-dtype", "bfloat16"], "--merge-dtype"), (["--onnx"], "--onnx")):
        assert error_lines(run_script("export.py", str(run_dir), "--output", str(out), *flags, "--push-to-hub",
                                      "me/emotions", "--dry-run")) == [
            f"emodist: error: {asked}: {out} exists and is pushed as it is, written otherwise: export into a new "
            "--output with them, and push that"]  # the float32 safetensors export went up without a word
    qlora_run, qlora_out = exports("mistral-qlora")  # a QLoRA export keeps its adapter in adapter/
    result = dry_run(qlora_out, qlora_run)
    assert result.returncode == 0, result.stderr
    assert "adapter/adapter_config.json" in result.stdout


def test_a_run_exported_from_inside_it_is_named_in_its_card(smoke_runs, tmp_path):
    """`export.py .` wrote a card titled `# ` whose pipeline line read model=""."""
    import shutil

    source, _ = smoke_runs("distilbert")
    run_dir = tmp_path / "my-run"
    shutil.copytree(source, run_dir)
    result = run_script("export.py", ".", cwd=run_dir)
    assert result.returncode == 0, result.stderr
    card = (run_dir / "export" / "README.md").read_text()
    assert "\n# my-run\n" in card and 'model = "THIS_DIRECTORY"   # the path of this export' in card
    assert export.run_name(tmp_path / "best") == "best"  # a link to a run keeps the name it was given
    (tmp_path / "best").symlink_to(run_dir)
    assert export.run_name(tmp_path / "best") == "best" and export.run_name(run_dir / "model" / "..") == "my-run"


def test_exporting_over_an_export_or_an_unfinished_run_is_refused(exports, tmp_path):
    run_dir, out = exports("distilbert")
    result = run_script("export.py", str(run_dir), "--output", str(out))
    assert error_lines(result) == [f"emodist: error: {out} exists: choose a new --output (nothing is overwritten)"]
    result = run_script("export.py", str(tmp_path))
    assert error_lines(result) == [f"emodist: error: {tmp_path}: not a finished run (no summary.json, config.yaml, "
                                   "model/config.json, model/thresholds.json): export a run that ended"]
    assert error_lines(run_script("export.py", str(run_dir / "model"))) == [  # "not a finished run"
        f"emodist: error: {run_dir / 'model'}: the model of a run: export the run directory, {run_dir}"]
    stopped = tmp_path / "stopped"  # a run killed at step 200: it said "export a run that ended", not how
    stopped.mkdir()
    for name in (".emodist-run", "config.yaml"):
        (stopped / name).write_text("")
    for command, then in (("export.py", "export it"), ("predict.py", "predict")):
        assert error_lines(run_script(command, str(stopped), *(["hello"] if command == "predict.py" else []))) == [
            f"emodist: error: {stopped}: a run that has not finished (no summary.json, so no model yet): finish it with "
            f"`accelerate launch launch/train.py --config {stopped / 'config.yaml'} --output-dir {stopped} --resume "
            f"auto`, then {then}"]
    from emodist.rundir.lock import RunLock

    training = RunLock.acquire(stopped, notify=lambda line: None)  # trained further now: its command was refused
    try:
        [line] = error_lines(run_script("export.py", str(stopped)))
        assert line.startswith(f"emodist: error: {stopped}: a run being trained now (pid {os.getpid()} on ")
        assert line.endswith("): its model comes with this training's finish: wait for it, then export it")
    finally:
        training.release()
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    for inside in ("checkpoints/new", "model/sub"):  # a save or a finish rewrites them: the export would be lost there
        assert error_lines(run_script("export.py", str(run_dir), "--output", str(run_dir / inside))) == [
            f"emodist: error: --output {run_dir / inside}: inside the run's {inside.split('/')[0]}/, which training "
            f"rewrites: choose a path outside it (default {run_dir / 'export'})"]
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
    into = stopped / "model" / "v1"  # another run's model/: its finish would replace the export
    assert error_lines(run_script("export.py", str(run_dir), "--output", str(into))) == [
        f"emodist: error: --output {into}: inside the run {stopped}'s model/, which training rewrites: choose a path "
        f"outside it (default {run_dir / 'export'})"]
    assert not (stopped / "model").exists()
    for inside in ("model.tmp/v1", "smoke-base/v1", "wandb/v1"):  # a finish, a restart from step 0 remove them
        managed = inside.split("/")[0]
        with pytest.raises(UsageError, match=rf"inside the run {re.escape(str(stopped))}'s {re.escape(managed)}/"):
            export.check_output(run_dir, stopped / inside, run_dir / "export")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda s: "{cut short", "not valid JSON"),
    (lambda s: json.dumps({k: v for k, v in s.items() if k != "test_tuned"}),
     "it lacks what the model card needs (KeyError: 'f1_micro')"),
    (lambda s: json.dumps({**s, "test": None}), "it holds no test scores"),
    (lambda s: json.dumps({**s, "test": {**s["test"], "f1_macro": "0.9"}}), "test.f1_macro is '0.9', not a number"),
    (lambda s: json.dumps({**s, "test_tuned": {**s["test_tuned"], "f1_micro": float("nan")}}),
     "test_tuned.f1_micro is nan, not a number"),  # an export went ahead on it
])
def test_a_broken_summary_is_refused_in_one_line_and_leaves_no_partial_export(smoke_runs, tmp_path, damage, message):
    import shutil

    source, _ = smoke_runs("distilbert")
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    summary = run_dir / "summary.json"
    summary.write_text(damage(json.loads(summary.read_text())))
    result = run_script("export.py", str(run_dir))
    [line] = error_lines(result)
    assert result.returncode == 2 and line.startswith(f"emodist: error: {summary}: ") and message in line
    assert line.count("not valid JSON") == (message == "not valid JSON")  # a summary of another shape is valid JSON
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("export")) == []


def test_thresholds_predict_would_refuse_are_refused_before_exporting(smoke_runs, tmp_path):
    """They were copied into the export as they were, exit 0: predict then refused the export."""
    import shutil

    source, _ = smoke_runs("distilbert")
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    cut = run_dir / "model" / "thresholds.json"
    tuned = json.loads(cut.read_text())
    label = next(iter(tuned["per_label"]))
    for damaged, message in (({**tuned, "per_label": {**tuned["per_label"], label: None}},
                               f"the threshold of {label} is None, not a number from 0 to 1"),
                              ({**tuned, "per_label": {k: v for k, v in tuned["per_label"].items() if k != label}},
                               f"has no threshold for {label}")):
        cut.write_text(json.dumps(damaged))
        result = run_script("export.py", str(run_dir))
        [line] = error_lines(result)
        assert result.returncode == 2 and line.startswith(f"emodist: error: {cut}") and message in line
        assert line.endswith(f"copy {run_dir / 'thresholds.json'} over it (the run wrote both), then export again")
        assert not any(p.name.startswith((".export", "export")) for p in run_dir.iterdir())


def test_a_shard_size_that_is_not_a_size_is_refused(exports, tmp_path):
    run_dir, _ = exports("distilbert")
    result = run_script("export.py", str(run_dir), "--output", str(tmp_path / "e"), "--max-shard-size", "lots")
    assert error_lines(result) == ["emodist: error: --max-shard-size lots: not a size: write a whole number and KB, MB, "
                                   "GB, KiB, MiB or GiB, e.g. 2GB"]


def test_a_repo_id_that_is_not_one_and_a_dry_run_without_a_push_are_refused_first(tmp_path):
    result = run_script("export.py", str(tmp_path), "--push-to-hub", "bad repo/id!!", "--dry-run", env=PUSH_ENV)
    [line] = error_lines(result)
    assert line.startswith("emodist: error: --push-to-hub bad repo/id!!: not a hub repository id (")
    assert line.endswith("use NAME or NAMESPACE/NAME, e.g. me/emotions")
    assert error_lines(run_script("export.py", str(tmp_path), "--dry-run")) == [
        "emodist: error: --dry-run shows what --push-to-hub would upload: add --push-to-hub REPO_ID"]
    assert error_lines(run_script("export.py", str(tmp_path), "--private")) == [
        "emodist: error: --private makes the repository --push-to-hub creates private: add --push-to-hub REPO_ID"]
    assert error_lines(run_script("export.py", str(tmp_path), "--push-to-hub", "", "--dry-run")) == [  # "$REPO" unset
        "emodist: error: --push-to-hub '': give the hub repository, e.g. --push-to-hub me/emotions"]
    assert list(tmp_path.iterdir()) == []


def test_the_model_card_says_what_a_short_run_on_a_subset_trained_on():
    cfg = config.load("minilm", overrides=["data.max_train_examples=1000", "train.max_steps=32"])
    summary = {"train": {"steps": 32, "epochs": 1.0, "examples": 1000}, "perf": {"sessions": 3}}
    assert cards._trained_on(summary, cfg) == ("32 steps (1 epoch) over 1,000 training examples (a seeded random "
                                                 "subset of the train split, data.max_train_examples=1000)")
    assert cards._sessions(summary) == ", trained in 3 sessions (stopped and resumed, or trained further)"
    summary = {"train": {"steps": 1, "epochs": 0.03125, "examples": 32}, "perf": {}}
    assert cards._trained_on(summary, config.load("minilm")) == "1 step (0.03 epochs) over 32 training examples"
    summary = {"train": {"steps": 6, "epochs": 6 / 1357, "examples": 43410}, "perf": {}}  # a few steps of GoEmotions
    assert cards._trained_on(summary, config.load("minilm")).startswith("6 steps (0.0044 epochs) over 43,410 training")
    assert cards._sessions(summary) == ""
    note = cards._unlearned({"thresholds": {"per_label": {"joy": 0.02, "anger": 0.4, "fear": 0.3}, "unlearned": ["joy"]}})
    assert note.startswith("\n\n**Warning from the dev scores:** 1 of 3 labels score on dev no better than labelling")


def test_the_model_card_names_the_data_loss_and_what_its_scores_were_measured_on(exports):
    """A smoke run on a user's directory was called "on synthetic data", the directory's name was listed as a hub
    data set, the loss went unsaid, and a QLoRA card gave the 4-bit model's scores as the merge's."""
    run_dir, _ = exports("distilbert")
    summary, cfg = read_summary(run_dir), config.load(config_file=str(run_dir / "config.yaml"))
    assert "tiny random model of that architecture on synthetic data" in cards.model_card(summary, cfg, "x")
    local = cards.model_card({**summary, "dataset": "my-posts"}, cfg, "me/emotions")
    meta = yaml.safe_load(local.split("---")[1])
    assert "datasets" not in meta and "synthetic" not in local and "on `my-posts`" in local
    assert meta["model-index"][0]["results"][0]["dataset"] == {"type": "my-posts", "name": "my-posts", "split": "test"}
    ekman = config.load(config_file=str(run_dir / "config.yaml"), overrides=["data.grouping=ekman"])
    grouped = yaml.safe_load(cards.model_card({**summary, "dataset": "goemotions-ekman"}, ekman, "x").split("---")[1])
    assert grouped["datasets"] == ["google-research-datasets/go_emotions"]
    # parsed by the hub's leaderboards: which configuration, and that 7 Ekman groups on a subset are no go_emotions
    # result (the card called them go_emotions' test split and said nothing more)
    subset = config.load(config_file=str(run_dir / "config.yaml"), overrides=["data.grouping=ekman",
                                                                               "data.max_eval_examples=64"])
    meta = yaml.safe_load(cards.model_card({**summary, "dataset": "goemotions-ekman"}, subset, "x").split("---")[1])
    assert meta["model-index"][0]["results"][0]["dataset"] == {
        "type": "google-research-datasets/go_emotions", "name": "goemotions-ekman", "config": "simplified",
        "split": "test", "args": {"grouping": "ekman", "max_eval_examples": 64}}
    german = yaml.safe_load(cards.model_card({**summary, "dataset": "goemotions-de"}, cfg, "x").split("---")[1])
    assert "datasets" not in german  # a directory of one's own, named like the hub's data set
    assert "; BCE; global batch" in local
    asl = config.load(config_file=str(run_dir / "config.yaml"), overrides=["train.loss=asl", "train.pos_weight=balanced"])
    assert ("; asymmetric loss (gamma+ 0.0, gamma- 4.0, clip 0.05), positives weighted by label balance (at most "
            "10x); global batch") in cards.model_card(summary, asl, "x")
    assert "hf download me/emotions --local-dir emotions" in local and 'predict.py emotions "' in local
    assert 'model = "me/emotions"' in local and 'predict.py THIS_DIRECTORY "' in cards.model_card(summary, cfg, "x")
    assert "measured on the 4-bit model" not in local
    for precision, said in (("no", ")"), ("bf16", "; measured by the run in bf16 mixed precision: computed in float32, as "
                                              "`pipeline` does, the scores can differ slightly)"), ("bf16+no", ")"),
                            ("no+bf16", "; measured by the run in bf16 mixed precision")):  # a LoRA card quoted bf16
        card = " ".join(cards.model_card({**summary, "mixed_precision": precision}, cfg, "x").split())  # as float32's
        assert f"## Scores (test split, {summary['test']['num_examples']} examples{said}" in card
    qlora = cards.model_card({**summary, "quantization": "nf4"}, cfg, "x")
    assert f"## Scores (test split, {summary['test']['num_examples']} examples; measured on the 4-bit NF4 model" in qlora
    assert "(QLoRA adapters trained on the 4-bit NF4 base, merged here into the bfloat16 base;" in " ".join(qlora.split())
    # an ONNX export and a float32 merge said "the bfloat16 base; the adapter is in adapter/" (found by a new user)
    onnx = " ".join(cards.model_card({**summary, "quantization": "nf4"}, cfg, "x", merged_in="float32",
                                     adapter_kept=False).split())
    assert "(QLoRA adapters trained on the 4-bit NF4 base, merged here into the float32 base;" in onnx
    assert "adapter/" not in onnx.split("merged here into")[1].split(")")[0]
    int8 = " ".join(cards.model_card({**summary, "quantization": "int8", "method": "lora"}, cfg, "x").split())
    assert "measured on the 8-bit model" in int8 and "(LoRA adapters trained on the 8-bit base," in int8
    from emodist.serve.model_dir import adapter_card

    recipe = adapter_card(config.load("mistral-qlora", overrides=["model.quantization=int8"]))
    # the hub lists an adapter under its base by base_model: a hub id's, never a local path's or a smoke run's
    assert yaml.safe_load(recipe.split("---")[1])["base_model"] == "mistralai/Mistral-7B-Instruct-v0.2"
    for overrides, smoke in ((["model.name_or_path=/srv/models/mistral"], False), ([], True)):
        local = adapter_card(config.load("mistral-qlora", overrides=overrides, smoke=smoke))
        assert "base_model" not in yaml.safe_load(local.split("---")[1])
    assert "BitsAndBytesConfig(load_in_8bit=True)" in recipe and "4-bit" not in recipe and "nf4" not in recipe


def test_an_export_leaves_everything_beside_it_as_it_was(smoke_runs, tmp_path):
    """The export is staged in a directory of its own: what lies beside --output (another launch's staging
    directory, a file emodist never wrote) is there, unchanged, afterwards."""
    run_dir, _ = smoke_runs("distilbert")
    (tmp_path / "export.tmp").mkdir()
    (tmp_path / "export.tmp" / "theirs.bin").write_bytes(b"not ours")
    (tmp_path / "notes.txt").write_text("mine")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = run_script("export.py", str(run_dir), "--output", str(tmp_path / "export"))
    assert result.returncode == 0, result.stderr[-3000:]
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if k.parts[0] != "export"} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.tmp", "notes.txt"]


def test_an_export_into_a_group_s_shared_directory_keeps_its_setgid_bit(smoke_runs, tmp_path):
    """A directory made in a setgid one (a shared group's) inherits the bit, so its files stay the group's:
    giving the export the mode a mkdir would have must not take the bit away."""
    run_dir, _ = smoke_runs("distilbert")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2775)
    result = run_script("export.py", str(run_dir), "--output", str(shared / "export"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert oct((shared / "export").stat().st_mode & 0o7777) == oct(0o2000 | (0o777 & ~files.umask()))


def test_a_sigterm_while_exporting_removes_the_staged_export(tmp_path):
    """A SIGTERM (a scheduler's, `kill`, `timeout`) killed export.py as it was: its staged directory, as large as
    the model, stayed beside the run for good."""
    import os
    import signal

    from emodist.runtime import signals

    before = signal.getsignal(signal.SIGTERM)
    try:
        signals.interrupt_on_sigterm()
        with pytest.raises(KeyboardInterrupt, match=r"^stopped \(SIGTERM\)$"), export.staged(tmp_path / "export") as tmp:
            (tmp / "model.safetensors").write_bytes(b"half of it")
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert list(tmp_path.iterdir()) == []


def test_the_model_s_files_are_told_from_a_user_s():
    """What a QLoRA export copies into adapter/, and what a finish replaces in model/: a user's predictions in
    model/ were copied into the export (and pushed), and a finish deleted a user's embeddings.bin."""
    from emodist.serve.model_dir import model_files

    model = ["adapter_config.json", "adapter_model.safetensors", "config.json", "tokenizer.json", "tokenizer.model",
             "tokenizer_config.json", "special_tokens_map.json", "thresholds.json", "model-00001-of-00002.safetensors",
             "model.safetensors.index.json", "vocab.txt", "chat_template.jinja"]
    users = ["predictions.jsonl", "NOTES.md", "README.md", "embeddings.bin", "my-model.safetensors"]
    assert model_files(model + users) == model


def test_a_finish_keeps_a_readme_of_the_user_s_in_model_and_replaces_its_own(tmp_path):
    """A LoRA finish writes its card as model/README.md: a second finish (a resumed run) wrote it over the
    user's own README.md there, lost without a word; and an older emodist's card must not pass for the user's."""
    from emodist.serve.model_dir import _replace_model_files

    card = "---\nlibrary_name: peft\n---\n# A LoRA adapter of an emodist run (gemma-lora)\n"
    older = "---\nlibrary_name: peft\n---\n# A LoRA adapter of an emodist run (gemma-lora)\nsaid NF4 of an int8 run\n"
    template = "---\nbase_model: x\nlibrary_name: peft\n---\n\n# Model Card for Model ID\n"  # peft's, kept by old finishes
    for earlier, stays, kept in (("my notes\n", "my notes\n", ["README.md"]), (card, card, []),
                                 (older, card, ["README.earlier.md"]), (template, card, [])):
        model, new = tmp_path / "model", tmp_path / "model.tmp"
        for directory, readme, weights in ((model, earlier, b"old"), (new, card, b"new")):
            directory.mkdir()
            (directory / "README.md").write_text(readme)
            (directory / "adapter_model.safetensors").write_bytes(weights)
        assert _replace_model_files(model, new) == kept
        assert (model / "README.md").read_text() == stays and not new.exists()
        assert (model / "adapter_model.safetensors").read_bytes() == b"new"
        if kept == ["README.earlier.md"]:  # an older emodist's card, or one edited since: replaced, kept beside
            assert (model / "README.earlier.md").read_text() == older
        shutil.rmtree(model)
