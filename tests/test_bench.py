"""The benchmarks' own set-up follows the code it measures: a benchmark that no longer starts is found here,
not by the next person who runs it (bench/throughput.py crashed after its training runs for weeks)."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import throughput  # noqa: E402 - bench/ is not a package


def test_throughput_reads_the_minilm_settings_both_sides_share(tmp_path):
    settings = throughput.data_settings(512, 128)
    cfg = throughput.variant_config(tmp_path, settings)
    assert (cfg.variant, cfg.data.dataset, cfg.data.data_dir) == ("minilm", "goemotions", str(tmp_path))
    assert (cfg.data.max_train_examples, cfg.data.max_eval_examples, cfg.train.epochs) == (512, 128, 1)


def test_rehearse_runs_settings_every_case_accepts(tmp_path):
    import rehearse

    from emodist import config

    overrides = [a for a in rehearse.settings(4, tmp_path) if "=" in a and not a.startswith("--")]
    for variant, _, _ in rehearse.CASES.values():
        cfg = config.load(variant, overrides=overrides, smoke=True)
        assert (cfg.train.micro_batch_size, cfg.data.max_length, cfg.data.pad_to_multiple_of) == (2, 64, 64)
        assert (cfg.model.smoke_size, cfg.model.lora.r, cfg.model.gradient_checkpointing) == ("real", 16, True)
