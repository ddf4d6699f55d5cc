"""Packed batches (data.packing): the texts of a batch end to end in rows, attention confined to each text.

The packer is checked by hand and on generated lengths; the models (the four architectures' smoke bases,
sdpa and eager attention, a sliding window, LoRA) give the padded batch's logits and gradients within
float32 rounding; whole runs (one process, DDP, ZeRO-2, a resume) train the padded run's curve.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import Ahead, launch, read_summary
from hypothesis import given
from hypothesis import strategies as st
from test_distributed import train_losses
from test_resume import steps_and_scores, stop_and_resume

from emodist import data, models
from emodist.data.packing import PackedCollator, place
from emodist.models.packing import accept_packed, block_mask
from emodist.runtime.errors import UsageError

# token counts from 1 to 40: rows of the longest text hold several of the short ones
LENGTHS = [40, 3, 9, 25, 1, 12, 30, 5, 2, 18, 7, 33, 4]


def test_first_fit_decreasing_by_hand():
    rows, starts = place(np.array([5, 3, 2, 4, 1]), width=5)
    # 5 fills row 0; 4 opens row 1; 3 opens row 2; 2 fits after the 3; 1 fits after the 4
    assert rows == 3
    assert starts.tolist() == [[0, 0], [2, 0], [2, 3], [1, 0], [1, 4]]


@given(st.lists(st.integers(1, 64), min_size=1, max_size=48))
def test_every_text_gets_its_own_span_of_one_row(lengths):
    lengths = np.array(lengths)
    width = int(lengths.max())
    rows, starts = place(lengths, width)
    taken = np.zeros((rows, width), dtype=int)
    for (row, col), n in zip(starts, lengths, strict=True):
        assert col + n <= width
        taken[row, col:col + n] += 1
    assert taken.max() == 1 and taken.sum() == lengths.sum()
    assert rows <= len(lengths)
    # first fit wastes less than half of every row but the last ones it opened for the longest texts
    assert rows <= 2 * np.ceil(lengths.sum() / width) + 1


def test_the_collator_lays_out_texts_positions_and_the_pooled_tokens():
    features = [{"input_ids": [7, 8, 9], "token_type_ids": [0, 0, 1], "labels": [1.0, 0.0]},
                {"input_ids": [5, 0], "token_type_ids": [1, 1], "labels": [0.0, 1.0]},  # ends with the pad id 0
                {"input_ids": [4], "token_type_ids": [0], "labels": [1.0, 1.0]}]
    first = PackedCollator(pad_id=0, pool="first")(features)
    # width 3: [7 8 9] alone; [5 0] then [4] share the second row
    assert first["input_ids"].tolist() == [[7, 8, 9], [5, 0, 4]]
    assert first["position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]
    assert first["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]
    assert first["token_type_ids"].tolist() == [[0, 0, 1], [1, 1, 0]]
    assert first["pool_index"].tolist() == [0, 3, 5]
    assert first["labels"].tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # the examples' order
    assert first["labels"].dtype == torch.float32
    last = PackedCollator(pad_id=0, pool="last")(features)
    assert last["pool_index"].tolist() == [2, 3, 5]  # [5 0]: its rightmost token that is not the pad id


def test_a_row_s_end_is_padding_and_not_a_text():
    features = [{"input_ids": [1, 2, 3, 4], "labels": [1.0]}, {"input_ids": [5, 6], "labels": [0.0]}]
    batch = PackedCollator(pad_id=0, pool="first")(features)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    # rows as wide as padded batches are on GPUs (data.pad_to_multiple_of=8): both texts fit one row
    wide = PackedCollator(pad_id=0, pool="first", pad_to_multiple_of=8)(features)
    assert wide["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 0, 0]]
    assert wide["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 0, 0]]
    assert wide["pool_index"].tolist() == [0, 4]


def test_the_mask_confines_attention_to_each_text():
    attention = torch.tensor([[1, 1, 1, 1, 0]])
    positions = torch.tensor([[0, 1, 0, 1, 0]])  # texts at 0-1 and 2-3, padding at 4
    both = block_mask(attention, positions, causal=False, window=None, eager=False, dtype=torch.float32)[0, 0]
    assert both.int().tolist() == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0],
                                   [0, 0, 0, 0, 1]]
    causal = block_mask(attention, positions, causal=True, window=None, eager=False, dtype=torch.float32)[0, 0]
    assert causal.int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0],
                                     [0, 0, 0, 0, 1]]
    window = block_mask(torch.ones(1, 3, dtype=torch.long), torch.tensor([[0, 1, 2]]), causal=True, window=2,
                        eager=False, dtype=torch.float32)[0, 0]
    assert window.int().tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    eager = block_mask(attention, positions, causal=False, window=None, eager=True, dtype=torch.bfloat16)
    assert eager.dtype == torch.bfloat16
    assert eager[0, 0, 0].tolist() == [0, 0, torch.finfo(torch.bfloat16).min, torch.finfo(torch.bfloat16).min,
                                       torch.finfo(torch.bfloat16).min]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """The four architectures' tiny smoke bases."""
    root = tmp_path_factory.mktemp("bases")
    texts = data.synthetic().splits["train"].texts
    return {arch: models.make_smoke_base(arch, texts, root / arch, seed=0) for arch in models.POOL}


def classifier(source, attention: str = "sdpa", **config):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=5, attn_implementation=attention, problem_type="multi_label_classification", **config)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def both_batches(tokenizer, architecture: str) -> tuple[dict, dict]:
    """A padded and a packed batch of texts of LENGTHS tokens ([CLS] words [SEP]) with random labels."""
    rng = np.random.default_rng(0)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    features = [{"input_ids": [cls, *rng.integers(5, len(tokenizer), max(n - 2, 0)).tolist(), sep][:n],
                 "token_type_ids": [0] * n, "attention_mask": [1] * n,
                 "labels": rng.integers(0, 2, 5).astype(float).tolist()} for n in LENGTHS]
    padded = data.collator(tokenizer, 1)(features)
    packed = PackedCollator(tokenizer.pad_token_id, models.POOL[architecture])(features)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # packing did put texts together
    return padded, packed


def logits_of(model, batch: dict) -> torch.Tensor:
    return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("architecture", ["bert", "distilbert", "gemma", "mistral"])
def test_packed_logits_equal_the_padded_ones(bases, architecture, attention):
    sources = bases
    model, tokenizer = classifier(sources[architecture], attention)
    accept_packed(model)
    padded, packed = both_batches(tokenizer, architecture)
    with torch.no_grad():
        expected, got = logits_of(model.eval(), padded), logits_of(model, packed)
    assert got.shape == expected.shape == (len(LENGTHS), 5)
    assert expected.abs().max() > 0.01  # not a comparison of zeros
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_a_sliding_window_shorter_than_the_texts_is_kept(bases):
    sources = bases
    model, tokenizer = classifier(sources["mistral"], sliding_window=4)
    accept_packed(model)
    padded, packed = both_batches(tokenizer, "mistral")
    with torch.no_grad():
        windowed = logits_of(model.eval(), padded)
        torch.testing.assert_close(logits_of(model, packed), windowed, atol=1e-5, rtol=0)
        model.config.sliding_window = None  # the window was in force: without it the texts read further back
        assert not torch.allclose(logits_of(model, padded), windowed, atol=1e-3)


@pytest.mark.parametrize("architecture", ["bert", "gemma"])
def test_packed_gradients_equal_the_padded_ones_under_lora(bases, architecture):
    from peft import LoraConfig, TaskType, get_peft_model

    sources = bases
    model, tokenizer = classifier(sources[architecture])
    targets = ["query", "value"] if architecture == "bert" else ["q_proj", "v_proj"]
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=targets))
    accept_packed(model)
    padded, packed = both_batches(tokenizer, architecture)
    grads = []
    for batch in (padded, packed):
        model.zero_grad()
        logits = logits_of(model.train(), batch)  # the smoke bases have no dropout: train mode is deterministic
        F.binary_cross_entropy_with_logits(logits, batch["labels"]).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert any("lora_B" in n for n in grads[0]) and any("classifier" in n or "score" in n for n in grads[0])
    for name, expected in grads[0].items():
        torch.testing.assert_close(grads[1][name], expected, atol=1e-6, rtol=1e-4, msg=name)


def test_attention_without_a_ready_mask_is_refused_in_one_line(bases):
    sources = bases
    model, _ = classifier(sources["distilbert"])
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(UsageError, match="data.packing=true: the model computes attention with flash_attention_2"):
        accept_packed(model)


def test_a_packed_model_keeps_its_parameter_names_and_its_padded_forward(bases):
    sources = bases
    model, tokenizer = classifier(sources["distilbert"])
    names = list(model.state_dict())
    padded, _ = both_batches(tokenizer, "distilbert")
    with torch.no_grad():
        before = logits_of(model.eval(), padded)
        accept_packed(model)
        after = logits_of(model, padded)
    assert list(model.state_dict()) == names
    assert torch.equal(before, after)


# gemma-lora --smoke in float32 without dropout, random batches (what packing is for), global batch 16: one
# process accumulating 2 micro-batches, or two processes; checkpoints mid-epoch for the resume
RUN = ["--variant", "gemma-lora", "--smoke", "model.dtype=float32", "train.mixed_precision=no", "model.lora.dropout=0",
       "data.group_by_length=false", "train.max_steps=60", "train.log_every_steps=1", "train.save_every_steps=20",
       "train.eval_every_steps=15", "track.plots=false"]
PACKED = [*RUN, "data.packing=true"]


@pytest.fixture(scope="module")
def packed_runs(tmp_path_factory, cache_dir) -> dict:
    """The run padded and packed in one process, packed under DDP and ZeRO-2 (two processes each)."""
    root = tmp_path_factory.mktemp("packed")
    ahead = Ahead()
    runs = {"padded": (RUN, {}), "packed": (PACKED, {}),
            "ddp": (PACKED, {"config_file": "multi_gpu.yaml", "num_processes": 2}),
            "zero2": (PACKED, {"config_file": "deepspeed_zero2.yaml", "num_processes": 2})}
    try:
        for name, (args, topology) in runs.items():
            if not topology:  # one-process runs beside the two-process ones
                ahead.start(name, *args, "--output-dir", str(root / name))
        results = {name: launch(*args, "--output-dir", str(root / name), **topology)
                   for name, (args, topology) in runs.items() if topology}
        results.update({name: ahead.get(name) for name, (_, topology) in runs.items() if not topology})
    finally:
        ahead.close()
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
    return {"root": root, "stdout": results["packed"].stdout, **{name: root / name for name in runs}}


@pytest.mark.alone
def test_a_packed_run_trains_the_padded_run_s_curve(packed_runs):
    padded, packed = train_losses(packed_runs["padded"]), train_losses(packed_runs["packed"])
    assert len(packed) == 60 and packed[-10:].mean() < 0.9 * packed[:10].mean()  # it learned
    # the same texts per step and the same logits: only float rounding differs (attention leaking across
    # texts, or a head reading the wrong token, moves the losses by far more)
    np.testing.assert_allclose(packed, padded, rtol=1e-3)
    dev_padded, dev_packed = read_summary(packed_runs["padded"])["dev"], read_summary(packed_runs["packed"])["dev"]
    assert dev_packed["loss"] == pytest.approx(dev_padded["loss"], rel=1e-3)
    perf_padded, perf_packed = read_summary(packed_runs["padded"])["perf"], read_summary(packed_runs["packed"])["perf"]
    assert perf_packed["train_samples"] == perf_padded["train_samples"] == 60 * 16
    assert perf_packed["train_tokens"] == perf_padded["train_tokens"]  # the real tokens: the same texts
    # the synthetic texts have 7-19 tokens (10 for the median): rows rounded up to 16 tokens (data.packing's
    # default) save little here; on GoEmotions they hold 94% real tokens (bench/RESULTS.md)
    assert perf_packed["train_padded_tokens"] % 16 == 0
    assert "random, packed (no padding)" in " ".join(packed_runs["stdout"].replace("│", " ").split())  # the banner


@pytest.mark.alone
def test_packed_runs_train_the_same_curve_on_one_or_two_processes_and_under_zero2(packed_runs):
    single = train_losses(packed_runs["packed"])
    np.testing.assert_allclose(train_losses(packed_runs["ddp"]), single, rtol=1e-4)
    np.testing.assert_allclose(train_losses(packed_runs["zero2"]), single, rtol=1e-4)
    assert read_summary(packed_runs["zero2"])["zero_stage"] == 2


@pytest.mark.alone
def test_a_packed_run_resumes_exactly(packed_runs, tmp_path):
    run_dir = tmp_path / "run"
    stop_and_resume(PACKED, run_dir, "step-20")
    assert steps_and_scores(run_dir) == steps_and_scores(packed_runs["packed"])
    assert read_summary(run_dir)["test"] == read_summary(packed_runs["packed"])["test"]
