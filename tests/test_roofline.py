"""The CPU's MFU denominator: a model's GEMM shapes, their measured rate, and its cache
(emodist/report/roofline.py); the end-to-end check is in tests/test_train.py."""

from __future__ import annotations

import json

import pytest
import torch

from emodist.report import roofline, telemetry
from emodist.report.roofline import Gemm
from emodist.runtime.errors import UsageError


def test_a_training_micro_batch_has_three_gemms_per_trained_layer_and_two_per_frozen_one():
    linears = [("encoder.layer.0.query", 4, 8, True), ("encoder.layer.1.query", 4, 8, True),
               ("encoder.layer.0.frozen", 8, 6, False), ("classifier", 8, 3, True)]
    gemms = roofline.gemms_of(linears, tokens=100, rows=10, head=["classifier"])
    assert gemms == sorted([
        Gemm(100, 8, 4, 2), Gemm(100, 4, 8, 2), Gemm(8, 4, 100, 2),  # forward, input and weight gradients, x2
        Gemm(100, 6, 8, 1), Gemm(100, 8, 6, 1),  # frozen: no weight gradient
        Gemm(10, 3, 8, 1), Gemm(10, 8, 3, 1), Gemm(3, 8, 10, 1),  # the head sees one row per text
    ], key=lambda g: (g.m, g.n, g.k))
    assert Gemm(100, 8, 4, 2).flops == 2 * 100 * 8 * 4 * 2


def test_a_built_models_linears_are_read_with_their_trained_flags():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model[0].weight.requires_grad_(False)
    assert roofline.model_gemms(model, tokens=16, rows=4, head=[]) == [
        Gemm(2, 8, 16), Gemm(16, 2, 8), Gemm(16, 4, 8), Gemm(16, 8, 2), Gemm(16, 8, 4)]


def test_the_rate_weights_each_shape_by_its_flops(monkeypatch):
    """One shape at 1 GFLOP/s doing 3x the FLOPs of one at 3 GFLOP/s: 4 units in 3 + 1/3 seconds."""
    rates = {(10, 10, 10): 1e9, (1, 10, 10): 3e9}
    monkeypatch.setattr(roofline, "shape_rate", lambda g, dtype: (rates[(g.m, g.n, g.k)], g))
    gemms = [Gemm(10, 10, 10, 3), Gemm(1, 10, 10, 10)]  # 6,000 and 2,000 FLOPs
    assert roofline.gemm_rate(gemms, torch.float32) == pytest.approx(8000 / (6000 / 1e9 + 2000 / 3e9))


def test_a_shape_is_measured_for_real_and_a_huge_one_with_fewer_rows():
    rate, measured = roofline.shape_rate(Gemm(64, 64, 64), torch.float32)
    assert measured == Gemm(64, 64, 64) and 1e6 < rate < 1e14
    rate, measured = roofline.shape_rate(Gemm(10**7, 512, 512), torch.float32)  # 5 TFLOP in one product
    assert (measured.n, measured.k) == (512, 512) and 2 * measured.m * 512 * 512 <= roofline.MAX_CALL_FLOPS
    assert 1e6 < rate < 1e14


def test_a_measurement_is_cached_per_shapes_and_dtype(tmp_path, monkeypatch):
    gemms = [Gemm(32, 16, 16)]
    first = roofline.cached_gemm_rate(gemms, torch.float32, tmp_path)
    assert json.loads((tmp_path / "roofline.json").read_text()) == {roofline.cache_key(gemms, torch.float32): first}

    def measured(*_):
        raise AssertionError("measured again")

    monkeypatch.setattr(roofline, "gemm_rate", measured)
    assert roofline.cached_gemm_rate(gemms, torch.float32, tmp_path) == first
    assert roofline.cache_key(gemms, torch.float32) != roofline.cache_key(gemms, torch.bfloat16)
    assert roofline.cache_key(gemms, torch.float32) != roofline.cache_key([Gemm(32, 16, 16, 2)], torch.float32)
    monkeypatch.setattr(roofline, "gemm_rate", lambda *_: 5.0)
    assert roofline.cached_gemm_rate([Gemm(8, 8, 8)], torch.float32, tmp_path, write=False) == 5.0
    assert len(json.loads((tmp_path / "roofline.json").read_text())) == 1  # not the main rank: not written


def test_an_unwritable_cache_costs_a_measurement_not_the_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert roofline.cached_gemm_rate([Gemm(8, 8, 8)], torch.float32, blocker / "cache") > 0


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "null", '{"KEY": -1.0}', '{"KEY": NaN}', '{"KEY": "7"}'])
def test_a_cache_of_another_shape_is_measured_again_and_replaced(tmp_path, monkeypatch, content):
    """A roofline.json of valid JSON but another shape failed the run after training (AttributeError)."""
    gemms = [Gemm(8, 8, 8)]
    key = roofline.cache_key(gemms, torch.float32)
    (tmp_path / "roofline.json").write_text(content.replace("KEY", key))
    monkeypatch.setattr(roofline, "gemm_rate", lambda *_: 5.0)
    assert roofline.cached_gemm_rate(gemms, torch.float32, tmp_path) == 5.0
    assert json.loads((tmp_path / "roofline.json").read_text()) == {key: 5.0}


@pytest.mark.parametrize("given", ["989TF", "-1", "0", "nan", "inf", " "])
def test_a_peak_override_that_is_not_a_positive_number_is_refused(monkeypatch, given):
    monkeypatch.setenv("EMODIST_PEAK_TFLOPS", given)
    with pytest.raises(UsageError) as error:
        telemetry.peak_override()
    assert str(error.value) == (
        f"EMODIST_PEAK_TFLOPS={given}: not a positive number of TFLOP/s (the peak MFU is reported against): write "
        "e.g. EMODIST_PEAK_TFLOPS=989.4, or unset it to use the card's datasheet")
    monkeypatch.setenv("EMODIST_PEAK_TFLOPS", "989.4")
    assert telemetry.peak_override() == pytest.approx(989.4e12)


class _Config:
    num_hidden_layers, hidden_size, vocab_size = 2, 64, 100


def test_cpu_mfu_divides_by_the_measured_peak_of_every_process(monkeypatch):
    monkeypatch.delenv("EMODIST_PEAK_TFLOPS", raising=False)
    perf = {"train_tokens": 1000, "train_samples": 10, "train_tokens_per_s": 1e6}
    params = 100 * 64 + 1_000_000
    out = telemetry.mfu(perf, params, params, _Config(), 2, torch.device("cpu"), measured_peak=5e10)
    assert out["peak_source"] == "measured GEMMs" and out["peak_tflops_per_s"] == 0.05
    assert out["mfu"] == pytest.approx(out["train_tflops_per_s"] * 1e12 / (2 * 5e10))
    monkeypatch.setenv("EMODIST_PEAK_TFLOPS", "10")  # the user's own figure wins
    out = telemetry.mfu(perf, params, params, _Config(), 2, torch.device("cpu"), measured_peak=5e10)
    assert out["peak_source"] == "EMODIST_PEAK_TFLOPS" and out["peak_tflops_per_s"] == 10
