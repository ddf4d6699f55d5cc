"""ONNX exports (launch/export.py --onnx [--quantize int8]) of real smoke runs: parity measured on the test
split and written down, an export that misses its tolerances refused, and served by launch/predict.py as the
torch model is."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import yaml
from conftest import error_lines, read_summary
from test_export import run_script

from emodist.serve import onnx_export
from emodist.serve.onnx_export import parity

LABELS = ["joy", "anger", "fear"]


@pytest.fixture(scope="module")
def onnx_exports(smoke_runs, tmp_path_factory):
    """onnx_exports(variant, *flags) -> (run_dir, export_dir, result): each export made once."""
    done = {}

    def get(variant: str, *flags: str):
        if (variant, flags) not in done:
            run_dir, _ = smoke_runs(variant)
            out = tmp_path_factory.mktemp("onnx") / variant
            result = run_script("export.py", str(run_dir), "--onnx", *flags, "--output", str(out))
            done[variant, flags] = run_dir, out, result
        return done[variant, flags]

    return get


def attributes(node) -> dict:
    return {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}


def scores_of(result) -> np.ndarray:
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return np.array([list(row["scores"].values()) for row in rows]), [row["labels"] for row in rows]


@pytest.mark.parametrize("variant", ["distilbert", "gemma-lora"])  # a full model; LoRA merged into its base
def test_a_float32_export_scores_as_the_torch_model_and_says_so(onnx_exports, variant):
    run_dir, out, result = onnx_exports(variant)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(run_dir)
    measured = json.loads((out / "parity.json").read_text())
    assert measured["passed"] and measured["precision"] == "float32"
    assert measured["examples"] == summary["test"]["num_examples"]
    assert measured["max_abs_diff"] <= 1e-4 and measured["label_agreement"] == 1.0
    assert json.loads((out / "config.json").read_text())["id2label"]["0"] == summary["labels"][0]
    assert (out / "model.onnx").is_file() and (out / "thresholds.json").is_file()
    graph = onnx.load(out / "model.onnx", load_external_data=False).graph
    config = json.loads((out / "config.json").read_text())
    layers = config.get("n_layers") or config["num_hidden_layers"]
    # an encoder's attention is one ONNX Attention op per layer (onnx_export.OPSETS), on (batch, length, hidden)
    # tensors (onnx_graph.attention_3d: no Transpose left in the graph); a decoder's is spelled out
    attention = [node for node in graph.node if node.op_type == "Attention"]
    assert len(attention) == (layers if variant == "distilbert" else 0)
    heads = config.get("n_heads") or config.get("num_attention_heads")
    assert all({"q_num_heads": heads, "kv_num_heads": heads}.items() <= attributes(node).items() for node in attention)
    if attention:
        assert not [node for node in graph.node if node.op_type in ("Transpose", "Where")]
    # tokenizer.json as transformers.js or ONNX Runtime users read it alone: it held no truncation (a text past the
    # positions crashed the graph) and the exporter's padding
    from tokenizers import Tokenizer

    max_length = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["max_length"]
    backend = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert [len(e.ids) for e in backend.encode_batch(["so glad " * 400, "hi"])] == [max_length, 3]
    import onnxruntime
    from transformers import AutoTokenizer

    session = onnxruntime.InferenceSession(str(out / "model.onnx"))  # fed what the tokenizer returns, as a user would
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert sorted(tokenizer.model_input_names) == sorted(i.name for i in session.get_inputs())
    session.run(None, dict(tokenizer(["so glad", "hi"], padding=True, return_tensors="np")))
    card = (out / "README.md").read_text()
    assert "## ONNX export (float32)" in card and "launch/predict.py" in card and "pipeline(" not in card
    assert f"{measured['f1_macro']['onnx']:.4f}" in card
    meta = yaml.safe_load(card.split("---")[1])  # this repository's results: the ONNX model's, not the torch model's
    assert meta["library_name"] == "onnx" and "onnx" in meta["tags"]
    assert {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]} == {
        f"F1 {avg} (tuned thresholds, ONNX float32)": round(measured[f"f1_{avg}"]["onnx"], 4) for avg in ("micro", "macro")}


def test_predict_serves_an_onnx_export_as_it_serves_the_torch_model(onnx_exports):
    run_dir, out, _ = onnx_exports("distilbert")  # a full fine-tune: the run's model is the exported one
    texts = ["what a wonderful surprise", "this is awful and I hate it", "ok"]
    served, labels = scores_of(run_script("predict.py", str(out), *texts))
    torch_scores, torch_labels = scores_of(run_script("predict.py", str(run_dir / "model"), *texts, "--precision",
                                                      "fp32"))  # the export's float32
    np.testing.assert_allclose(served, torch_scores, atol=1e-4)
    assert labels == torch_labels
    refused = run_script("predict.py", str(out), *texts, "--precision", "bf16")
    assert refused.returncode == 2 and error_lines(refused) == [
        "emodist: error: --precision bf16: an ONNX export runs in the precision it was exported in (ONNX Runtime, no "
        "autocast): use --precision auto, or serve the torch model/ directory in bf16"]


def test_an_export_missing_its_graph_or_its_manifest_is_named_so(onnx_exports, tmp_path):
    """Without its graph, ONNX Runtime's loader names the directory as a hub URL; without export.json, the
    directory would be read as a torch model and named as if it were model.name_or_path."""
    import shutil

    _, out, _ = onnx_exports("distilbert")
    no_graph, no_manifest = tmp_path / "no-graph", tmp_path / "no-manifest"
    for damaged, name in ((no_graph, "model.onnx"), (no_manifest, "export.json")):
        shutil.copytree(out, damaged)
        (damaged / name).unlink()
    assert error_lines(run_script("predict.py", str(no_graph), "hello")) == [
        f"emodist: error: {no_graph}: model.onnx, the graph its export.json names, is missing: the export is "
        "incomplete; export it again from its run directory (launch/export.py RUN --onnx)"]
    assert error_lines(run_script("predict.py", str(no_manifest), "hello")) == [
        f"emodist: error: {no_manifest}: holds model.onnx but no export.json naming it, so it is no ONNX export emodist "
        "serves: export it again from its run directory (launch/export.py RUN --onnx)"]


def test_on_cpus_an_export_is_served_as_measured_fastest(onnx_exports):
    """Without ONNX Runtime's SkipLayerNormalization fusion (onnx_export.CPU_SESSION_CONFIG): the served session
    must carry the setting, which parity.json was measured under too."""
    _, out, _ = onnx_exports("distilbert")
    runner = next(iter(onnx_export.OnnxModel.load(out).exported.runners.values()))
    options = runner.session.get_session_options()
    for key, value in onnx_export.CPU_SESSION_CONFIG.items():
        assert options.get_session_config_entry(key) == value


def test_an_int8_export_records_its_drift_and_is_served(onnx_exports):
    run_dir, out, result = onnx_exports("distilbert", "--quantize", "int8", "--accept-drift")
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads((out / "parity.json").read_text())
    assert measured["precision"] == "int8" and measured["tolerances"] == onnx_export.TOLERANCES["int8"]
    assert 0 < measured["max_abs_diff"] < 0.5  # quantized: close, not equal
    float32 = json.loads((onnx_exports("distilbert")[1] / "parity.json").read_text())
    assert measured["max_abs_diff"] > float32["max_abs_diff"]
    assert "parity on" in result.stdout
    served, _ = scores_of(run_script("predict.py", str(out), "what a wonderful surprise"))
    assert served.shape == (1, len(read_summary(run_dir)["labels"]))
    from emodist.runtime.errors import UsageError
    from emodist.serve import export

    export.check_pushable(out, run_dir, onnx=True, quantize="int8")  # the int8 export, asked for as such
    with pytest.raises(UsageError, match="^no --quantize: .* exists and is pushed as it is, written otherwise"):
        export.check_pushable(out, run_dir, onnx=True)  # the int8 export went up as the float32 one asked for
    with pytest.raises(UsageError, match="^--quantize int8: "):
        export.check_pushable(onnx_exports("distilbert")[1], run_dir, onnx=True, quantize="int8")


def test_an_export_outside_its_tolerances_is_refused_and_leaves_nothing(smoke_runs, tmp_path, monkeypatch):
    from emodist.runtime.errors import UsageError

    run_dir, _ = smoke_runs("distilbert")
    monkeypatch.setitem(onnx_export.TOLERANCES, "float32", {"max_abs_diff": 0.0})  # nothing can meet it
    out = tmp_path / "onnx"
    with pytest.raises(UsageError, match=r"the float32 ONNX export misses its tolerances on the test split "
                                         r"\(largest probability difference .* > 0e\+00\): nothing was written"):
        onnx_export.export(run_dir, out, notify=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flags", "message"), [
    (["--quantize", "int8"], "--quantize applies to ONNX exports: add --onnx"),
    (["--accept-drift"], "--accept-drift applies to ONNX exports: add --onnx"),
    (["--onnx", "--merge-dtype", "bfloat16"], "--merge-dtype and --max-shard-size apply to the safetensors export"),
])
def test_onnx_flags_out_of_place_are_refused_in_one_line(smoke_runs, flags, message):
    run_dir, _ = smoke_runs("distilbert")
    result = run_script("export.py", str(run_dir), *flags)
    [line] = error_lines(result)
    assert result.returncode == 2 and message in line


def test_parity_passes_within_the_float32_tolerance_and_names_what_fails():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, (200, 3))
    reference = rng.random((200, 3)).astype(np.float32)
    cut = np.full(3, 0.5)
    close = parity(reference, reference + 5e-5, targets, cut, LABELS, "float32")
    assert close["passed"] and close["failures"] == [] and close["max_abs_diff"] == pytest.approx(5e-5, rel=1e-3)
    far = parity(reference, reference + 2e-4, targets, cut, LABELS, "float32")
    assert not far["passed"]
    assert far["failures"] == [f"largest probability difference {far['max_abs_diff']:.2e} > 1e-04"]
    broken = reference.copy()
    broken[:3, 1] = np.nan  # NaN compares False with every limit: it passed
    assert parity(reference, broken, targets, cut, LABELS, "float32")["failures"][0] == "3 probabilities are not numbers"


def test_parity_of_int8_counts_texts_whose_labels_change_and_the_macro_f1_gap():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 2, (100, 3))
    reference = np.where(targets == 1, 0.8, 0.2).astype(np.float32)
    cut = np.full(3, 0.5)
    moved = reference.copy()
    moved[:2, 0] = 1 - moved[:2, 0]  # two texts' first label flips: 98% agree
    result = parity(reference, moved, targets, cut, LABELS, "int8")
    assert result["label_agreement"] == pytest.approx(0.98)
    assert result["f1_macro"]["torch"] == pytest.approx(1.0)
    assert not result["passed"]
    assert result["failures"][0] == "the same labels for 98.00% of the texts < 99%"
    assert result["failures"][1].startswith("macro-F1 ")  # 2 of ~50 positives of one label: F1 falls by > 0.005
    one = reference.copy()
    one[0, 0] = 0.5 if reference[0, 0] < 0.5 else 0.49  # one text flips: 99% agree
    assert parity(reference, one, targets, cut, LABELS, "int8")["label_agreement"] == pytest.approx(0.99)


def test_a_run_whose_test_split_is_gone_is_refused_before_anything_is_exported(smoke_runs, tmp_path):
    """The parity needs the run's test split: without it the export stops at once, in one line."""
    import shutil

    source, _ = smoke_runs("distilbert")
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("export*"))
    (tmp_path / "data").mkdir()
    config_file = run_dir / "config.yaml"
    config_file.write_text(config_file.read_text().replace("dataset: synthetic", "dataset: goemotions")
                           .replace("data_dir: null", f"data_dir: {tmp_path / 'data'}"))
    result = run_script("export.py", str(run_dir), "--onnx")
    assert result.returncode == 65 and error_lines(result) == [  # emodist's exit code for data it cannot read
        f"emodist: error: {tmp_path / 'data' / 'emotions.txt'}: missing file"]
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith("export")]
    assert "exporting" not in result.stdout
    (tmp_path / "data").rmdir()  # the data moved away: the safetensors export needs none of it
    result = run_script("export.py", str(run_dir), "--onnx")
    assert result.returncode == 65 and error_lines(result) == [
        f"emodist: error: {tmp_path / 'data'}: the run's data (data.data_dir) is not there (moved or deleted?), and an "
        "ONNX export measures itself on its test split: put the data back, or export without --onnx"]
    result = run_script("export.py", str(run_dir))
    assert result.returncode == 0 and (run_dir / "export" / "config.json").is_file(), result.stderr
