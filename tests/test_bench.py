"""The benchmarks' own set-up follows the code it measures: a benchmark that no longer starts is found here,
not by the next person who runs it (bench/throughput.py crashed after its training runs for weeks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
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


# --- bad arguments: refused in one line (exit 2) before any work starts ---------------------------------

BAD_ARGUMENTS = {  # id: (script, its arguments, the start of what it says); {tmp} is the test's tmp_path
    "roofline-variant": ("roofline.py", ["--variant", "nope"], "unknown variant 'nope': choose one of"),
    "roofline-tokens": ("roofline.py", ["--tokens", "0"], "--tokens 0: must be 1 or more"),
    "profile-variant": ("profile_step.py", ["--variant", "nope"], "unknown variant 'nope': choose one of"),
    "profile-steps": ("profile_step.py", ["--smoke", "--steps", "0"], "--steps 0: must be 1 or more"),
    "profile-examples": ("profile_step.py", ["--smoke", "--examples", "16"],
                         "--examples 16: makes 2 micro-batches of 8, fewer than the 25 that --warmup 5 and --steps 20"),
    "profile-set": ("profile_step.py", ["--smoke", "--set", "optim.lrr=1"], "override 'optim.lrr=1': unknown key"),
    "predict-texts": ("predict_throughput.py", ["--texts", "0"], "--texts 0: must be 1 or more"),
    "predict-model": ("predict_throughput.py", ["--model", "{tmp}/nonexistent"],
                      "--model {tmp}/nonexistent: no model here"),
    "predict-lora": ("predict_throughput.py", ["--model", "{tmp}/lora/model"],
                     "--model {tmp}/lora/model: a LoRA adapter"),
    "int8-schemes": ("int8_schemes.py", ["runs/x/model", "--schemes", "bogus"],
                     "--schemes bogus: not WEIGHTS:ACTIVATIONS[:ALPHA]"),
    "int8-weights": ("int8_schemes.py", ["runs/x/model", "--schemes", "channel:token,chan:fp"],
                     "--schemes channel:token,chan:fp: scheme 'chan:fp': weights 'chan': use one of fp, channel"),
    "int8-alpha": ("int8_schemes.py", ["runs/x/model", "--schemes", "fp:token:2"],
                   "--schemes fp:token:2: ALPHA '2': use a number from 0 to 1"),
    "int8-model": ("int8_schemes.py", ["{tmp}/nonexistent"], "{tmp}/nonexistent: no model here"),
    "threads-busy": ("threads.py", ["--busy", "-1", "--steps", "1", "--real-steps", "0"],
                     "--busy -1: must be 0 or more"),
    "throughput-repeats": ("throughput.py", ["--repeats", "0"], "--repeats 0: must be 1 or more"),
    "throughput-examples": ("throughput.py", ["--examples", "0"], "--examples 0: must be 1 or more"),
    "throughput-set": ("throughput.py", ["--set", "optim.lrr=1", "--examples", "64", "--repeats", "1"],
                       "override 'optim.lrr=1': unknown key 'optim.lrr' (did you mean optim.lr?)"),
}


def refused(command: list[str], cwd: Path, tmp: Path) -> str:
    """The one line `command` is refused with (exit 2, nothing else on stderr); its temporary files go to
    `tmp`/tmp, which must stay empty: the refusal comes before any work."""
    temp = tmp / "tmp"
    temp.mkdir(exist_ok=True)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "TMPDIR": str(temp), "EMODIST_CACHE": str(tmp / "cache")})
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("emodist: error: "), done.stderr[-3000:]
    assert not list(temp.iterdir())
    return lines[0].removeprefix("emodist: error: ")


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_benchmarks_refuse_a_bad_argument_in_one_line_before_any_work(case, tmp_path):
    script, arguments, says = BAD_ARGUMENTS[case]
    lora = tmp_path / "lora" / "model"  # an adapter's model/: its config and adapter_config.json (not read)
    lora.mkdir(parents=True)
    for name in ("config.json", "adapter_config.json"):
        (lora / name).write_text("{}")
    line = refused([sys.executable, str(ROOT / "bench" / script), *(a.format(tmp=tmp_path) for a in arguments)],
                   ROOT, tmp_path)
    assert line.startswith(says.format(tmp=tmp_path)), line


def test_goemotions_minilm_explains_itself_and_takes_no_flag_for_its_run_directory(tmp_path):
    """`--help` was taken as the run directory: dirname's help text became directories in the repository."""
    script = str(ROOT / "bench" / "goemotions_minilm.sh")
    before = {p for p in ROOT.iterdir() if p.is_dir()}
    for flag in ("--help", "-h"):
        done = subprocess.run([script, flag], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert done.stdout.startswith("usage: bench/goemotions_minilm.sh [RUN_DIR] [KEY=VALUE ...]")
    line = refused([script, "--bogus"], tmp_path, tmp_path)
    assert line.startswith("--bogus: RUN_DIR comes first, a directory rather than a flag")
    line = refused([script, "train.pos_weight=balanced"], tmp_path, tmp_path)
    assert line.startswith("train.pos_weight=balanced: a setting in RUN_DIR's place")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]  # the refusals' own (empty) TMPDIR alone
    assert {p for p in ROOT.iterdir() if p.is_dir()} == before


def test_throughput_keeps_the_work_directory_a_failed_side_names(tmp_path, monkeypatch):
    """It said "see /tmp/emodist-throughput-..." of a directory it had just deleted."""
    import tempfile

    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def failed(side, _args, work):
        raise throughput.SideFailed(f"throughput: the {side} run failed (exit 1): see its messages above; its files "
                                    f"are kept in {work}")

    monkeypatch.setattr(throughput, "measure", failed)
    args = ["--examples", "64", "--repeats", "1", "--data-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as stop:
        throughput.main(args)
    work = Path(str(stop.value.code).rsplit("kept in ", 1)[1])
    assert work.parent == tmp_path and work.is_dir()

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(throughput, "measure", interrupted)  # any other end: nothing is left behind
    assert throughput.main(args) == 130
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == [work]
