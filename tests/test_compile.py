"""train.compile: the transformer blocks compiled in place (inductor, dynamic shapes) compute what the eager
ones compute, keep the weights' names (checkpoints, the exported model), resume exactly, and are refused under
DeepSpeed in one line."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import launch, read_summary
from safetensors import safe_open
from test_resume import steps_and_scores, stop_and_resume

from emodist import config, models
from emodist.runtime.errors import UsageError
from emodist.train import distributed


def test_compiled_blocks_compute_the_eager_logits_under_their_own_names():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=3)).eval()
    names = list(model.state_dict())
    batches = [torch.randint(0, 100, (2, length)) for length in (7, 11)]  # two lengths: one dynamic graph
    eager = [model(input_ids=ids).logits for ids in batches]
    assert models.compile_blocks(model) == 2  # the two layers of the ModuleList, nothing else
    assert list(model.state_dict()) == names
    for ids, expected in zip(batches, eager, strict=True):
        torch.testing.assert_close(model(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_compile_is_refused_under_deepspeed():
    cfg = config.load("mistral-lora", overrides=["train.compile=true"], smoke=True)
    zero2 = distributed.Topology("DEEPSPEED", 2, 1, zero_stage=2, ds_config_file="zero2.json")
    with pytest.raises(UsageError, match=r"^train.compile=true under DeepSpeed \(zero2.json\).*train.compile=false"):
        distributed.check_support(cfg, zero2)
    distributed.check_support(cfg, distributed.Topology("MULTI_CPU", 2, 1))  # DDP: accepted


SHORT = ["--variant", "distilbert", "--smoke", "train.max_steps=30", "train.save_every_steps=10",
         "train.log_every_steps=1", "train.eval_every_steps=15", "data.group_by_length=true", "train.compile=true"]


@pytest.mark.alone
def test_a_compiled_run_resumes_exactly_and_saves_the_eager_names(tmp_path, cache_dir):
    reference = tmp_path / "uninterrupted"
    done = launch(*SHORT, "--output-dir", str(reference))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "blocks compiled (train.compile)" in " ".join(done.stdout.replace("│", " ").split())  # the banner

    run_dir = tmp_path / "run"
    stop_and_resume(SHORT, run_dir, "step-10")
    assert steps_and_scores(run_dir) == steps_and_scores(reference)
    assert read_summary(run_dir)["test"] == read_summary(reference)["test"]

    exported = set(json.loads((run_dir / "model" / "model.safetensors.index.json").read_text())["weight_map"])
    with safe_open(str(run_dir / "checkpoints" / "step-30" / "model.safetensors"), "pt") as checkpoint:
        saved = set(checkpoint.keys())
    for keys in (exported, saved):  # the eager model's names, in the export and in the checkpoints
        assert "distilbert.transformer.layer.0.attention.q_lin.weight" in keys
        assert not any("_orig_mod" in key for key in keys)
