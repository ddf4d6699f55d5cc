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
