"""Batch inference (`emodist.serve.inference.Classifier`) on the exported models of real smoke runs: the same
probabilities as the model run on one text at a time, in the order given, labels cut at the run's tuned
thresholds; bf16 autocast where the hardware has it, or as asked."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emodist import config, data
from emodist.runtime import process
from emodist.runtime.errors import UsageError
from emodist.scoring import thresholds
from emodist.serve import inference
from emodist.serve.inference import Classifier


@pytest.fixture(params=["distilbert", "gemma-lora"])  # a full model and an adapter on its base
def exported(request, smoke_runs):
    run_dir, _ = smoke_runs(request.param)
    cfg = config.load(config_file=str(run_dir / "config.yaml"))
    texts = data.load(cfg.data, seed=cfg.train.seed).splits["dev"].texts[:150]
    return run_dir / "model", texts


def test_probabilities_equal_one_text_at_a_time_in_the_order_given(exported):
    model_dir, texts = exported
    classifier = Classifier.load(model_dir, batch_size=16, precision="fp32")
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.permutation(len(texts))]
    batched = classifier.probabilities(texts)

    alone = []
    with torch.no_grad():
        for text in texts:  # no padding at all: the reference
            encoded = classifier.tokenizer(text, truncation=True, max_length=classifier.max_length, return_tensors="pt")
            alone.append(torch.sigmoid(classifier.model(**encoded).logits.float())[0].numpy())
    assert batched.shape == (len(texts), len(classifier.labels)) and batched.dtype == np.float32
    # float32 models agree to rounding; a bfloat16 base (gemma-lora) differs in the last bits of its 8-bit
    # mantissa where padding changes the matmul shapes
    bf16 = any(p.dtype == torch.bfloat16 for p in classifier.model.parameters())
    np.testing.assert_allclose(batched, np.stack(alone), atol=5e-3 if bf16 else 2e-5)
    assert len({len(classifier.tokenizer(t)["input_ids"]) for t in texts}) > 3  # the batches did need padding


def test_a_run_is_read_at_the_length_it_trained_at_and_a_str_is_one_text(exported, tmp_path, monkeypatch):
    """predict read 128 tokens of a run trained and tuned at data.max_length 32; `probabilities("a text")` scored
    each of its characters as a text."""
    model_dir, texts = exported
    classifier = Classifier.load(model_dir, precision="fp32")
    assert classifier.max_length == config.load(config_file=str(model_dir.parent / "config.yaml")).data.max_length == 32
    assert json.loads((model_dir / "thresholds.json").read_text())["max_length"] == 32  # recorded where it was tuned
    assert Classifier.load(model_dir, max_length=64).max_length == 64  # what the caller asks for
    long = " ".join(texts[:10])
    assert classifier.truncated(long) == classifier.truncated([long]) == 1
    np.testing.assert_array_equal(classifier.probabilities(long), classifier.probabilities([long]))
    assert classifier.predict(long) == classifier.predict([long]) and len(classifier.predict(long)) == 1

    # a model/ written before the length was recorded: its tokenizer holds the base's model_max_length
    old = tmp_path / "run" / "model"
    shutil.copytree(model_dir, old)
    unrecorded = {k: v for k, v in json.loads((old / "thresholds.json").read_text()).items() if k != "max_length"}
    (old / "thresholds.json").write_text(json.dumps(unrecorded))
    settings = json.loads((old / "tokenizer_config.json").read_text())
    (old / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": 64}))
    assert Classifier.load(old).max_length == 128  # alone: what it was read at before, not its tokenizer's 64
    shutil.copy(model_dir.parent / "config.yaml", old.parent / "config.yaml")  # another run's: thresholds differ
    (old.parent / "thresholds.json").write_text(json.dumps({**unrecorded, "global": 0.25}))
    assert Classifier.load(old).max_length == 128
    (old.parent / "thresholds.json").write_text((old / "thresholds.json").read_text())  # its own run
    assert Classifier.load(old).max_length == 32
    monkeypatch.chdir(old)
    assert Classifier.load(".").max_length == 32  # "." has no parent of its own: the run is found all the same


def test_labels_are_cut_at_the_thresholds_the_run_tuned(exported):
    model_dir, texts = exported
    classifier = Classifier.load(model_dir)
    tuned = thresholds.for_labels(thresholds.load(model_dir), classifier.labels)
    np.testing.assert_array_equal(classifier.cut, tuned)
    probabilities = classifier.probabilities(texts)
    expected = [[label for label, p, cut in zip(classifier.labels, row, tuned, strict=True) if p >= cut]
                for row in probabilities]
    assert classifier.predict(texts) == expected
    assert any(expected)  # labels were given, not an empty answer matched by an empty answer


def test_a_model_whose_weights_hold_nan_is_refused_not_served_without_labels(exported):
    """NaN probabilities reach no threshold: predict printed every text without a label, exit 0."""
    model_dir, texts = exported
    classifier = Classifier.load(model_dir, precision="fp32")
    with torch.no_grad():
        list(classifier.model.parameters())[-1].fill_(float("nan"))  # the classifier's: every text
    with pytest.raises(UsageError) as error:
        classifier.probabilities(texts[:20])
    assert str(error.value) == (
        f"{model_dir}: its probabilities for 20 of 20 texts are not numbers (NaN): its weights hold NaN or inf (a "
        "damaged file, or a run that diverged): serve another export or checkpoint")


def test_no_texts_no_rows(exported):
    classifier = Classifier.load(exported[0])
    assert classifier.probabilities([]).shape == (0, len(classifier.labels))
    assert classifier.predict([]) == []


def test_what_no_tokenizer_reads_is_refused_naming_the_text(exported):
    """None, bytes, a dict (whose keys were labelled as texts) and a lone surrogate reached the tokenizer, which
    failed with a TypeError of its own or labelled the wrong thing."""
    classifier = Classifier.load(exported[0])
    for texts, message in [
        (None, "Classifier: texts must be a str or a sequence of str, not NoneType"),
        (b"so glad", "Classifier: texts must be a str or a sequence of str, not bytes: decode the bytes first"),
        ({"so glad": 1}, "Classifier: texts must be a str or a sequence of str, not dict"),
        (["fine", None], "Classifier: text 1 is NoneType None, not a text"),
        (["fine", "bad \ud800 x"], "Classifier: text 1 holds \\ud800, half of a UTF-16 surrogate pair, which is no "
                                    "character on its own"),
    ]:
        with pytest.raises(UsageError) as error:
            classifier.predict(texts)
        assert str(error.value) == message
    assert classifier.predict(("fine", "so glad")) == classifier.predict(["fine", "so glad"])  # any sequence


def test_a_length_or_batch_the_model_cannot_take_is_refused_and_a_run_directory_serves_its_model(exported):
    model_dir, texts = exported
    for kwargs, message in [({"max_length": 0}, "max_length 0: must be a whole number, at least 8"),
                            ({"max_length": 10**6}, "max_length 1000000: this model reads at most 128 tokens: use "
                                                    "max_length 128 or less"),  # a tensor-size RuntimeError
                            ({"batch_size": 0}, "batch_size 0: must be a whole number, at least 1"),
                            ({"device": "tpu"}, "device 'tpu': not a device: use cpu, cuda or cuda:N"),
                            ({"device": "mps"}, "device 'mps': emodist runs on cpu or cuda devices"),  # "corrupted"
                            *([({"device": "cuda"}, "device 'cuda': this machine has no CUDA GPU (or no CUDA build of "
                                                    "torch): use device='cpu'")]  # torch's own AssertionError
                              if not torch.cuda.is_available() else [])]:
        with pytest.raises(UsageError) as error:
            Classifier.load(model_dir, **kwargs)
        assert str(error.value) == message
    by_run = Classifier.load(model_dir.parent, precision="fp32")  # transformers failed on its tokenizer
    assert by_run.source == str(model_dir)
    assert np.array_equal(by_run.probabilities(texts[:8]), Classifier.load(model_dir, precision="fp32").probabilities(texts[:8]))


def test_bf16_autocast_is_what_it_says(exported):
    model_dir, texts = exported
    exact = Classifier.load(model_dir, precision="fp32")
    bf16 = Classifier.load(model_dir, precision="bf16")
    assert (exact.precision, bf16.precision) == ("fp32", "bf16")
    ours, theirs = bf16.probabilities(texts), exact.probabilities(texts)
    assert ours.dtype == np.float32
    assert np.abs(ours - theirs).max() > 0  # the forward passes did run in bf16
    np.testing.assert_allclose(ours, theirs, atol=0.05)  # bf16's 8-bit mantissa, not another model


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_hardware(monkeypatch, native):
    monkeypatch.setattr(process, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert inference.serving_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert inference.serving_precision("bf16", cpu) == "bf16"  # asked for: emulated where not native
    assert inference.serving_precision("fp32", cpu) == "fp32"
    assert inference.serving_precision("auto", cpu, onnx=True) == "fp32"  # ONNX Runtime: no autocast


def test_auto_precision_of_a_loaded_model(monkeypatch, smoke_runs):
    model_dir = smoke_runs("distilbert")[0] / "model"
    monkeypatch.setattr(process, "cpu_has_native_bf16", lambda: True)
    assert Classifier.load(model_dir).precision == "bf16"
    monkeypatch.setattr(process, "cpu_has_native_bf16", lambda: False)
    assert Classifier.load(model_dir).precision == "fp32"


@pytest.mark.parametrize(("major", "native"), [(7, False), (8, True), (9, True)])  # T4/V100, A100, H100
def test_a_gpu_computes_bf16_from_ampere_on_and_older_ones_use_fp16(monkeypatch, major, native):
    """torch.cuda.is_bf16_supported() says yes on a T4 too, where bf16 is emulated: serving and training's
    `auto` read the compute capability of the GPU in use instead."""
    from emodist.train.accelerator import resolve_precision

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    # what a T4 answers when torch tries a bf16 tensor on it (emulated): "supported"
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: asked.append(device) or SimpleNamespace(major=major))
    second = torch.device("cuda", 1)
    assert process.gpu_has_native_bf16(second) is native and asked == [second]
    assert inference.serving_precision("auto", second) == ("bf16" if native else "fp32")
    if not native:
        with pytest.raises(UsageError, match="--precision bf16: this GPU does not compute in bf16"):
            inference.serving_precision("bf16", second)
    assert resolve_precision(config.load("distilbert")) == ("bf16" if native else "fp16")


@pytest.mark.parametrize(("launcher", "overrides", "refused"), [
    ("no", [], None),  # accelerate launch's default, and its --mixed_precision no: emodist's setting decides
    ("bf16", [], None),
    ("BF16", ["train.mixed_precision=bf16"], None),
    ("fp16", [], "mixed_precision=fp16 (its --mixed_precision, or its config file's mixed_precision), but "
                 "train.mixed_precision=auto computes in bf16 on this machine: emodist's setting decides: set "
                 "train.mixed_precision=fp16 to train in it, or drop accelerate's"),
    ("fp8", [], "mixed_precision=fp8 (its --mixed_precision, or its config file's mixed_precision), but "
                "train.mixed_precision=auto computes in bf16 on this machine: emodist's setting decides: emodist trains "
                "in no, fp16 or bf16: drop accelerate's"),
    ("bf16", ["train.mixed_precision=no"], "mixed_precision=bf16 (its --mixed_precision, or its config file's "
     "mixed_precision), but train.mixed_precision=no computes in float32: emodist's setting decides: set "
     "train.mixed_precision=bf16 to train in it, or drop accelerate's"),
])
def test_a_launcher_precision_that_the_run_would_ignore_is_refused(monkeypatch, launcher, overrides, refused):
    """`accelerate launch --mixed_precision fp16` trained in bf16 with no word: the Accelerator takes emodist's
    train.mixed_precision over the launcher's (ACCELERATE_MIXED_PRECISION)."""
    from emodist.train.accelerator import resolve_precision

    monkeypatch.setattr(process, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    cfg = config.load("minilm", None, overrides)
    if refused is None:
        assert resolve_precision(cfg) == cfg.train.mixed_precision.replace("auto", "bf16")
    else:
        with pytest.raises(UsageError) as err:
            resolve_precision(cfg)
        assert str(err.value) == f"accelerate launch asks for {refused}"


@pytest.mark.parametrize(("requested", "onnx", "message"), [
    ("half", False, "--precision half: choose one of auto, bf16, fp32"),
    ("bf16", True, "--precision bf16: an ONNX export runs in the precision it was exported in"),
])
def test_precisions_that_cannot_run_are_refused(requested, onnx, message):
    with pytest.raises(UsageError, match=message):
        inference.serving_precision(requested, torch.device("cpu"), onnx)


def test_a_lora_model_directory_loads_with_peft_as_its_readme_says(exported):
    """A LoRA model/ held peft's empty template, and peft alone loaded the base without the classifier's labels
    (a size mismatch of the head): its README now gives the recipe, which must load what predict serves."""
    model_dir, texts = exported
    if not (model_dir / "adapter_config.json").exists():
        assert not (model_dir / "README.md").exists()  # a full model/ is transformers' own layout: no card
        return
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert "[More Information Needed]" not in card and "launch/export.py RUN_DIRECTORY" in card
    scope: dict = {}
    exec(card.split("```python\n")[1].split("```")[0].replace("THIS_DIRECTORY", str(model_dir)), scope)  # noqa: S102
    model = scope["model"].eval()
    classifier = Classifier.load(model_dir, precision="fp32")
    with torch.no_grad():
        theirs = np.stack([torch.sigmoid(model(**classifier.tokenizer(text, truncation=True, max_length=classifier.max_length,
                                                                    return_tensors="pt")).logits.float())[0].numpy()
                           for text in texts[:8]])
    np.testing.assert_allclose(theirs, classifier.probabilities(texts[:8]), atol=5e-3)  # a bfloat16 base
    assert model.config.id2label == dict(enumerate(classifier.labels))


def test_a_roberta_model_reads_two_positions_fewer_than_its_table_holds():
    """RoBERTa's positions start past its padding index: max_length=34 on a table of 34 passed the check, then
    failed on the first long text (index 34 is out of bounds; found by review)."""
    from transformers import BertConfig, RobertaConfig, RobertaForSequenceClassification

    from emodist.models import readable_tokens

    assert readable_tokens(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert readable_tokens(BertConfig(max_position_embeddings=512)) == 512
    tiny = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=34, pad_token_id=1, num_labels=2))
    with pytest.raises(UsageError) as error:
        Classifier(tiny, None, np.full(2, 0.5), max_length=33)
    assert str(error.value) == "max_length 33: this model reads at most 32 tokens: use max_length 32 or less"
    assert Classifier(tiny, None, np.full(2, 0.5), max_length=32).max_length == 32
