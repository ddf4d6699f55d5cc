"""The benchmarks' own set-up follows the code it measures: a benchmark that no longer starts is found here,
not by the next person who runs it (bench/throughput.py crashed after its training runs for weeks)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import throughput  # noqa: E402 - bench/ is not a package


def test_throughput_reads_the_minilm_settings_both_sides_share(tmp_path):
    settings = throughput.data_settings(512, 128)
    cfg = throughput.variant_config(tmp_path, settings)
    assert (cfg.variant, cfg.data.dataset, cfg.data.data_dir) == ("minilm", "goemotions", str(tmp_path))
    assert (cfg.data.max_train_examples, cfg.data.max_eval_examples, cfg.train.epochs) == (512, 128, 1)
    # emodist's side computes in float32 as the Trainer does, also where `auto` would pick bf16
    emodist = throughput.variant_config(tmp_path, [*throughput.EMODIST_SETTINGS, *settings])
    assert (emodist.train.mixed_precision, emodist.train.eval_every_steps) == ("no", 0)


def test_rehearse_runs_settings_every_case_accepts(tmp_path):
    import rehearse

    from emodist import config

    overrides = [a for a in rehearse.settings(4, tmp_path) if "=" in a and not a.startswith("--")]
    for variant, _, _ in rehearse.CASES.values():
        cfg = config.load(variant, overrides=overrides, smoke=True)
        assert (cfg.train.micro_batch_size, cfg.data.max_length, cfg.data.pad_to_multiple_of) == (2, 64, 64)
        assert (cfg.model.smoke_size, cfg.model.lora.r, cfg.model.gradient_checkpointing) == ("real", 16, True)


def test_throughput_ends_with_the_ratio_against_the_trainer_at_its_best_setting():
    """Both Trainer settings are compared; the last line is the headline: its length-grouped batches."""
    def run(speed, f1, rss):
        return {"examples_per_s": speed, "tokens_per_s": 10 * speed, "peak_rss_mib": rss, "dev_f1_micro": f1}

    rows = [("emodist", 1, run(60.0, 0.36, 1500)), ("emodist", 2, run(64.0, 0.35, 1500)),
            ("trainer-grouped", 1, run(40.0, 0.35, 1600)), ("trainer-grouped", 2, run(42.0, 0.35, 1600)),
            ("trainer", 1, run(30.0, 0.34, 1700)), ("trainer", 2, run(32.0, 0.34, 1700))]
    lines = throughput.verdict(throughput.summarize(rows)).splitlines()
    assert lines[0].startswith("emodist / Trainer (random): 2.00x examples/s, dev micro-F1 gap +0.0150")
    assert lines[1].startswith("emodist / Trainer (group_by_length): 1.51x examples/s (target >= 1.3x), dev micro-F1 "
                               "gap +0.0050 (target within 0.01), peak RSS 0.94x")
    # --packed: packed random batches against emodist's grouped ones, above the Trainer's lines
    rows += [("emodist-packed", 1, run(50.0, 0.355, 1400)), ("emodist-packed", 2, run(56.0, 0.355, 1400))]
    packed = throughput.verdict(throughput.summarize(rows)).splitlines()
    assert packed[1:] == lines
    assert packed[0] == ("emodist packed random batches / length-grouped batches: 0.85x examples/s, dev micro-F1 gap "
                         "+0.0000, peak RSS 0.93x; medians")
    # --trainer-compile: the compiled Trainer's line comes before the two above, the headline stays last
    rows += [("trainer-compiled", 1, run(31.0, 0.35, 2000)), ("trainer-compiled", 2, run(31.0, 0.35, 2000))]
    compiled = throughput.verdict(throughput.summarize(rows)).splitlines()
    assert compiled[0] == packed[0] and compiled[2:] == lines
    assert compiled[1].startswith("emodist / Trainer (group_by_length, torch_compile): 2.00x examples/s, dev micro-F1 "
                                  "gap +0.0050 (target within 0.01), peak RSS 0.75x")


def test_profile_step_profiles_a_smoke_run_and_groups_its_operators(tmp_path):
    import profile_step

    assert profile_step.kind_of("aten::addmm") == profile_step.kind_of("aten::mm") == "GEMM (linear layers)"
    assert profile_step.kind_of("aten::bernoulli_") == "dropout"
    assert profile_step.kind_of("aten::_fused_adamw_") == "optimizer (AdamW)"
    assert profile_step.kind_of("aten::native_layer_norm_backward") == "LayerNorm"
    assert profile_step.kind_of("aten::add") == "other elementwise and reductions"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "profile_step.py"), "--variant", "distilbert",
                           "--smoke", "--steps", "4", "--warmup", "1"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "EMODIST_CACHE": str(tmp_path / "cache")}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    head = next(line for line in lines if line.startswith("4 steps, "))
    assert float(head.split("GEMMs ran at ")[1].split()[0]) > 0
    shares = [float(line.rsplit("|", 2)[1].strip().rstrip("%")) for line in lines
              if line.startswith("| ") and line.endswith("% |") and not line.startswith("| `")]
    assert 99.5 <= sum(shares) <= 100.5  # every kind and what no operator accounts for: the whole step


def test_predict_throughput_runs_the_ladder_and_checks_every_side_against_torch(tmp_path):
    """Every rung (pipeline, torch, torch under bf16 autocast on a CPU that computes in bf16, ONNX float32,
    ONNX int8) labels the texts; the other sides' lines come first, each against torch, and the pipeline's
    line last; the float32 export gives torch's probabilities. The texts: the synthetic data set's, in
    GoEmotions' layout (the bench reads the first of test, then dev)."""
    from emodist.data.synthetic import synthetic
    from emodist.runtime import process

    texts = synthetic().splits["test"].texts
    for split, part in (("test", texts[:48]), ("dev", texts[48:96])):
        (tmp_path / f"{split}.tsv").write_text("".join(f"{t}\t0\tid{i}\n" for i, t in enumerate(part)))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "predict_throughput.py"), "--texts", "96",
                           "--repeats", "1", "--data-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    bf16 = process.cpu_has_native_bf16()
    assert [line.split()[0] for line in lines if " run 1: " in line] == [
        "pipeline", "torch", *(["torch-bf16"] if bf16 else []), "onnx-float32", "onnx-int8"]
    verdict = lines[-(5 if bf16 else 3):]
    if bf16:
        half, *verdict = verdict
        assert half.startswith("emodist torch-bf16/torch examples/s: ")
        assert 0 < float(half.rsplit("difference ", 1)[1]) < 0.05
        assert verdict.pop(2).startswith("emodist onnx-int8/torch-bf16 examples/s: ")
    float32, int8, pipe = verdict
    assert float32.startswith("emodist onnx-float32/torch examples/s: ") and "same labels for 96 texts" in float32
    assert float(float32.rsplit("difference ", 1)[1]) <= 1e-4
    assert int8.startswith("emodist onnx-int8/torch examples/s: ") and "target >= 2.5x" in int8
    assert 0 < float(int8.rsplit("difference ", 1)[1]) < 0.5
    assert pipe.startswith("emodist/pipeline examples/s: ") and "same labels for 96 texts" in pipe
