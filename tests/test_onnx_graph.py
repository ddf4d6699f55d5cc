"""emodist.serve.onnx_graph.attention_3d on real exports (onnx_export.write) of smoke-size BERT and DistilBERT
classifiers: the rewrite drops every Transpose and Reshape around attention and changes no output bit, padding
and texts that are all padding included; a graph outside its pattern is left as it is."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from emodist import data
from emodist.serve import onnx_export, onnx_graph


@pytest.fixture(scope="module", params=["bert", "distilbert"])
def exports(request, tmp_path_factory):
    """(the graph as transformers' exporter wrote it, the same rewritten by write(), the model's config)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from emodist.models.smoke import make_smoke_base

    root = tmp_path_factory.mktemp(request.param)
    base = make_smoke_base(request.param, data.synthetic(0).splits["train"].texts, root / "base", seed=0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_graph, "attention_3d", lambda path, heads: 0)  # the exporter's own graph, as a baseline
        onnx_export.write(model, tokenizer, root / "plain")
    onnx_export.write(model, tokenizer, root / "rewritten")
    return onnx_export.graph_file(root / "plain"), onnx_export.graph_file(root / "rewritten"), model.config


def batches(vocab: int, seed: int = 0):
    """Padded batches of random token ids, several lengths, with one text that is all padding."""
    rng = np.random.default_rng(seed)
    for size, length in ((1, 1), (3, 7), (8, 23), (5, 64)):
        ids = rng.integers(5, vocab, (size, length))
        mask = (np.arange(length) < rng.integers(1, length + 1, (size, 1))).astype(np.int64)
        if size > 1:
            mask[1] = 0
        yield {"input_ids": ids * mask, "attention_mask": mask}


def outputs(path, vocab: int) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path))
    return [session.run(None, batch)[0] for batch in batches(vocab)]


def op_types(path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node]


def test_the_rewrite_drops_the_layout_nodes_and_changes_no_output_bit(exports):
    plain, rewritten, config = exports
    layers = config.num_hidden_layers
    assert op_types(plain).count("Attention") == op_types(rewritten).count("Attention") == layers
    assert op_types(plain).count("Transpose") >= 4 * layers and op_types(rewritten).count("Transpose") == 0
    assert op_types(rewritten).count("Reshape") <= op_types(plain).count("Reshape") - 4 * layers
    assert "Where" not in op_types(rewritten)  # the rows without keys are zeroed by a product
    for before, after in zip(outputs(plain, config.vocab_size), outputs(rewritten, config.vocab_size), strict=True):
        assert np.isfinite(after).all()
        np.testing.assert_array_equal(after, before)


def test_a_rewritten_graph_is_not_rewritten_again(exports, tmp_path):
    _, rewritten, config = exports
    again = tmp_path / "model.onnx"
    shutil.copy(rewritten, again)
    assert onnx_graph.attention_3d(again, config.num_attention_heads) == 0
    assert again.read_bytes() == rewritten.read_bytes()


def test_a_mask_that_may_not_be_finite_leaves_the_graph_as_it_is(exports, tmp_path):
    """With -inf for masked scores, a row without keys could be NaN, which the Where zeroes and a product
    would not: the rewrite must not take its product form then."""
    plain, _, config = exports
    model = onnx.load(str(plain), load_external_data=False)
    producer = {out: node for node in model.graph.node for out in node.output}
    scaled = {producer[node.input[3]].input[1] for node in model.graph.node if node.op_type == "Attention"}
    for tensor in model.graph.initializer:
        if tensor.name in scaled:
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.array(-np.inf, dtype=np.float32), tensor.name))
    changed = tmp_path / plain.name
    onnx.save(model, str(changed))
    for name in plain.parent.glob(plain.name + ".data"):  # the weights the graph points to
        shutil.copy(name, tmp_path / name.name)
    saved = changed.read_bytes()
    assert onnx_graph.attention_3d(changed, config.num_attention_heads) == 0
    assert changed.read_bytes() == saved
