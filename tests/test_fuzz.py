"""Generated bad input for every entry point's readers: whatever comes in, the answer is a result or one
UsageError (one line for the user), never another exception.

Config (overrides, YAML files), data formats (GoEmotions, SemEval E-c, CSV, JSON lines), checkpoints
(state.json, changed bytes), predict's inputs, the summary.json that compare.py and export.py read, the
metrics.jsonl that a resume truncates, and the `--resume` argument. hypothesis generates the cases; a
failure prints the smallest input that breaks the rule.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emodist import config, data
from emodist.config import DataConfig
from emodist.data import readers
from emodist.report import compare
from emodist.rundir import checkpoints, contract, timeline
from emodist.runtime import files
from emodist.runtime.errors import UsageError
from emodist.serve.textio import read_texts

# The same 150 cases per fuzzer on every run (the profile in conftest.py; CI stays deterministic). To search
# further: pytest tests/test_fuzz.py --hypothesis-profile=explore (3,000 random cases each)
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow])
KEYS = sorted(config.field_docs())
# text that looks like what people type into these files: digits, separators, quotes, brackets, odd unicode
TEXT = st.text(alphabet=st.sampled_from(list("0123456789,;|\t\n\r \"'[]{}:-+.eE_aAzZ²٣\u00e9\x00\ufeff")), max_size=40)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)


def one_line_or_result(call, *inputs):
    """Run `call`; a UsageError must be one line of text, anything else fails the test. (A list of config
    problems has a line per problem; a line break the user's own `inputs` hold may show in the message.)"""
    try:
        return call()
    except UsageError as err:
        message = str(err)
        broken = any(isinstance(i, str) and ("\n" in i or "\r" in i) for i in inputs)
        assert message and (broken or "problems in the configuration" in message or "\n" not in message), message
        return None


# ---------------------------------------------------------------------------------------------------
# Config


@FUZZ
@given(key=st.sampled_from(KEYS) | st.text(max_size=12), value=TEXT)
def test_any_override_loads_or_is_refused(key, value):
    cfg = one_line_or_result(lambda: config.load("distilbert", overrides=[f"{key}={value}"], smoke=True))
    if cfg is not None:
        assert cfg.problems() == []


@FUZZ
@given(tree=st.dictionaries(st.sampled_from(["optim", "train", "model", "data", "track", "variant", "x"]),
                            JSON | st.dictionaries(st.sampled_from(KEYS + ["lr", "epochs", "seed"]), JSON, max_size=4),
                            max_size=4),
       raw=st.binary(max_size=60), as_yaml=st.booleans())
def test_any_config_file_loads_or_is_refused(tree, raw, as_yaml):
    import yaml

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        if as_yaml:
            path.write_text(yaml.safe_dump(tree, allow_unicode=True))
        else:
            path.write_bytes(raw)
        one_line_or_result(lambda: config.load("distilbert", str(path)))


# ---------------------------------------------------------------------------------------------------
# Data formats


def loaded_consistently(directory: Path, **settings) -> None:
    loaded = one_line_or_result(lambda: data.load(DataConfig(dataset="auto", data_dir=str(directory), **settings),
                                                  seed=0))
    if loaded is not None:
        assert len(set(loaded.labels)) == len(loaded.labels)
        for split in loaded.splits.values():
            assert split.targets.shape == (len(split.texts), len(loaded.labels)) and len(split.texts) > 0
            assert all(isinstance(text, str) and text.strip() for text in split.texts)
            assert set(np.unique(split.targets)) <= {0.0, 1.0}


@FUZZ
@given(labels=st.lists(TEXT, max_size=5), rows=st.lists(TEXT, min_size=1, max_size=4))
def test_any_goemotions_directory_loads_or_is_refused(labels, rows):
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        (directory / "emotions.txt").write_text("\n".join(labels), encoding="utf-8", errors="surrogatepass")
        for split in data.SPLITS:
            (directory / f"{split}.tsv").write_text("\n".join(rows), encoding="utf-8", errors="surrogatepass")
        loaded_consistently(directory)


@FUZZ
@given(lines=st.lists(st.one_of(TEXT, JSON.map(json.dumps)), min_size=1, max_size=4),
       fmt=st.sampled_from(["csv", "jsonl"]), labels_txt=st.none() | TEXT)
def test_any_csv_or_jsonl_directory_loads_or_is_refused(lines, fmt, labels_txt):
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        header = "text,labels\n" if fmt == "csv" else ""
        for split in data.SPLITS:
            (directory / f"{split}.{fmt}").write_text(header + "\n".join(lines), encoding="utf-8")
        if labels_txt is not None:
            (directory / "labels.txt").write_text(labels_txt, encoding="utf-8")
        loaded_consistently(directory)


@FUZZ
@given(rows=st.lists(st.lists(TEXT, min_size=1, max_size=14).map("\t".join), min_size=1, max_size=3))
def test_any_semeval_directory_loads_or_is_refused(rows):
    header = "ID\tTweet\t" + "\t".join(readers._SEMEVAL_LABELS)
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        for name in readers._SEMEVAL_FILES.values():
            (directory / name).write_text("\n".join([header, *rows]), encoding="utf-8")
        loaded_consistently(directory)


# ---------------------------------------------------------------------------------------------------
# Checkpoints


def write_checkpoint(directory: Path) -> Path:
    """A checkpoint as save_checkpoint leaves it: files, and a state.json with their sizes, hashes and digest."""
    checkpoint = directory / "checkpoints" / "step-10"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (checkpoint / "optimizer.bin").write_bytes(b"adam" * 100)
    state = {key: 0 for key in checkpoints.REQUIRED if key not in ("files", "digest", "fingerprint", "step")}
    state.update(step=10, fingerprint={"labels": ["joy"]}, files={
        name: checkpoints._describe_file(checkpoint / name) for name in ("model.safetensors", "optimizer.bin")})
    files.write_json(checkpoint / "state.json", {**state, "digest": checkpoints._digest(state)})
    assert checkpoints.unusable(checkpoint) is None
    return checkpoint


@FUZZ
@given(state=JSON, raw=st.binary(max_size=40), as_json=st.booleans())
def test_any_state_json_is_a_reason_or_a_usable_checkpoint(state, raw, as_json):
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = write_checkpoint(Path(folder))
        path = checkpoint / "state.json"
        if as_json:
            path.write_text(json.dumps(state))
        else:
            path.write_bytes(raw)
        reason = checkpoints.unusable(checkpoint)
        assert isinstance(reason, str) and reason  # nothing generated matches the digest
        assert checkpoints.latest_checkpoint(Path(folder)) == (None, [(checkpoint, reason)])


@FUZZ
@given(position=st.integers(min_value=0, max_value=1023), flip=st.integers(min_value=1, max_value=255),
       cut=st.booleans())
def test_any_changed_byte_of_a_checkpoint_file_makes_it_unusable(position, flip, cut):
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = write_checkpoint(Path(folder))
        weights = checkpoint / "model.safetensors"
        content = bytearray(weights.read_bytes())
        if cut:
            del content[position:]
        else:
            content[position] ^= flip
        weights.write_bytes(bytes(content))
        assert checkpoints.unusable(checkpoint).startswith("model.safetensors ")


# ---------------------------------------------------------------------------------------------------
# predict.py's inputs, compare.py's and export.py's summaries, metrics.jsonl, --resume


@FUZZ
@given(raw=st.binary(max_size=80) | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
       suffix=st.sampled_from([".txt", ".csv", ".jsonl", ""]), column=st.sampled_from(["text", "body", ""]))
def test_any_predict_input_file_is_texts_or_refused(raw, suffix, column):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(raw)
        texts = one_line_or_result(lambda: read_texts(str(path), column))
        if texts is not None:
            assert all(isinstance(t, str) and t.strip() for t in texts.texts) and texts.skipped >= 0


@FUZZ
@given(summary=JSON | st.fixed_dictionaries(
    {"variant": st.text(max_size=5), "dataset": st.text(max_size=5), "labels": st.lists(st.text(max_size=4), max_size=3)},
    optional={k: JSON | st.dictionaries(st.sampled_from(["f1_macro", "f1_micro", "num_examples", "per_label",
                                                          "confusion", "peak_memory_bytes", "steps"]), JSON)
              for k in ("dev", "test", "test_tuned", "perf", "train", "params", "thresholds")}))
def test_any_summary_is_compared_or_refused(summary):
    checked = one_line_or_result(lambda: compare.checked_summary(Path("runs/x/summary.json"), summary))
    if checked is not None:
        values = compare.row(Path("runs/x"), checked)
        compare.markdown([values], checked, [])
        compare.check_comparable([Path("runs/x")], [checked])


@FUZZ
@given(summary=JSON, card=st.booleans())
def test_any_summary_is_exported_or_refused(summary, card):
    from emodist.serve import export

    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder)
        (run_dir / "model").mkdir()
        (run_dir / "model" / "config.json").write_text("{}")
        (run_dir / "model" / "thresholds.json").write_text("{}")
        config.dump(config.load("distilbert", smoke=True), run_dir / "config.yaml")
        (run_dir / "summary.json").write_text(json.dumps(summary))
        one_line_or_result(lambda: export.finished_run(run_dir))


@FUZZ
@given(lines=st.lists(JSON.map(json.dumps) | TEXT, max_size=6), step=st.integers(min_value=0, max_value=50))
def test_any_metrics_jsonl_is_truncated_without_error(lines, step):
    from emodist.report import plots

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metrics.jsonl"
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        plots._records(Path(folder))
        timeline.truncate_metrics(path, after_step=step)
        assert all(json.loads(line)["step"] <= step for line in path.read_text().splitlines())


@FUZZ
@given(resume=st.sampled_from(["auto", "none"]) | TEXT.filter(lambda t: t.strip()), overwrite=st.booleans())
def test_any_resume_argument_opens_the_run_or_is_refused(resume, overwrite):
    cfg = config.load("distilbert", smoke=True)
    with tempfile.TemporaryDirectory() as folder:
        cfg.output_dir = str(Path(folder) / "run")
        run = one_line_or_result(lambda: contract._open(cfg, ["joy"], {}, overwrite, resume, notify=lambda _: None),
                                 resume)
        if run is not None:
            run.close()
            assert run.checkpoint is None  # nothing generated names a checkpoint
