"""The memory plan (emodist/models/memory.py, launch/plan.py): its counts against DeepSpeed's estimators and
against the model the builder really builds, its verdict, its advice, its refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, launch, read_summary

from emodist import config, models
from emodist.models import memory
from emodist.models.placement import Placement, Target, from_accelerate_config, parse_size
from emodist.models.shapes import model_shapes
from emodist.runtime import errors

P = 66_958_086  # distilbert-base-uncased with a 6-label head (the smoke set's), every weight trainable


@pytest.fixture(scope="module")
def distilbert():
    """The real distilbert's shapes (from the shipped sizes, on the meta device) and its run config."""
    cfg = config.load("distilbert", smoke=True, overrides=["model.smoke_size=real"])
    return cfg, model_shapes(cfg, num_labels=6)


def test_the_shapes_count_every_weight_of_the_real_model(distilbert):
    cfg, shapes = distilbert
    assert shapes.total == P
    assert shapes.largest_layer == 30522 * 768  # the word embeddings: what DeepSpeed gathers whole
    assert (shapes.hidden, shapes.layers, shapes.intermediate) == (768, 6, 3072)


@pytest.mark.parametrize("variant", ["distilbert", "mistral-lora"])
def test_the_shapes_build_on_the_meta_device_inside_a_zero3_launch(variant):
    """Under ZeRO-3 transformers builds models inside DeepSpeed's zero.Init (a run plans in that state); a
    decoder's classifier builds its base model through AutoModel.from_config, an encoder's directly."""
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    cfg = config.load(variant)
    outside = model_shapes(cfg, num_labels=28).total
    zero3 = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    assert zero3.is_zero3() and is_deepspeed_zero3_enabled()
    assert model_shapes(cfg, num_labels=28).total == outside
    assert is_deepspeed_zero3_enabled()  # set back as it was
    del zero3


@pytest.mark.parametrize(("stage", "offload", "processes"), [
    (2, False, 4), (2, True, 4), (3, False, 4), (3, True, 4), (3, True, 2), (2, False, 1)])
def test_model_states_under_zero_are_deepspeed_s_own_estimates(distilbert, stage, offload, processes):
    """Every weight trainable (what DeepSpeed's estimators assume): the device's share is theirs to the byte,
    and so is what an offload puts on the host (without their 1.5x buffer factor)."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    cfg, shapes = distilbert
    placement = Placement(processes=processes, zero_stage=stage, offload_optimizer=offload, offload_params=offload,
                          device="cuda", precision="bf16")
    planned = memory.plan(cfg, placement, 6, shapes)
    if stage == 2:
        cpu, gpu = estimate_zero2_model_states_mem_needs(P, processes, 1, cpu_offload=offload,
                                                         additional_buffer_factor=1)
    else:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(P, shapes.largest_layer, processes, 1, cpu_offload=offload,
                                                            cpu_offload_params=offload, additional_buffer_factor=1)
    assert abs(planned.model_states() - gpu) <= 8  # integer division per row
    if offload:  # per node: every process's share
        assert abs(planned.model_states(on_host=True) * processes - cpu) <= 8 * processes


@pytest.mark.parametrize("variant", ["distilbert", "gemma-lora", "mistral-lora", "mistral-qlora", "minilm"])
def test_the_plan_counts_the_trainable_weights_the_builder_makes(variant, tmp_path):
    """The tiny smoke model of each variant, built for real (LoRA, heads, quantization) and planned from its
    shapes: the same trainable count."""
    import torch

    cfg = config.load(variant, smoke=True)
    texts = ["joy and anger", "fear", "love, surprise and joy"] * 20
    base = models.make_smoke_base(cfg.model.architecture, texts, tmp_path / "base", seed=0)
    built = models.build_model(cfg.model, ["a", "b", "c", "d", "e", "f"], str(base), torch.device("cpu"))
    shapes = model_shapes(cfg, 6, source=str(base))
    planned = memory.plan(cfg, Placement(device="cpu", precision="no"), 6, shapes)
    assert planned.params_trainable == built.params_trainable


def test_qlora_on_one_12gb_gpu_fits_with_a_4bit_base(tmp_path):
    cfg = config.load("mistral-qlora")
    planned = memory.plan(cfg, Placement(device="cuda", precision="bf16"), 28)
    base = next(row for row in planned.rows if row.name == "base weights")
    assert 3.5 * 2**30 < base.bytes < 4.5 * 2**30  # the bound for a 7B 4-bit base: <= 4.5 GiB
    assert planned.params_trainable == 32 * 16 * (2 * (4096 + 4096) + 2 * (4096 + 1024)) + 4096 * 28
    assert Target("cuda", parse_size("12GB", "--gpu-memory"), "").fits(planned)


def test_advice_names_changes_that_make_it_fit():
    cfg = config.load("mistral-lora")  # a bf16 7B base: 13 GiB before anything else
    target = Target("cuda", 12 * 2**30, "12 GiB")
    placement = Placement(device="cuda", precision="bf16")
    assert not target.fits(memory.plan(cfg, placement, 28))
    advice = memory.advice(cfg, placement, 28, target)
    # the cheapest first: the base in 4 bits, then on the host; a smaller batch is not enough
    assert [a["change"] for a in advice if a["fits"]] == ["model.quantization=nf4 (QLoRA)",
                                                          "--config_file accelerate_configs/deepspeed_zero3_offload.yaml"]
    assert "train.micro_batch_size=1 (accumulation keeps the global batch)" in [a["change"] for a in advice]
    on_four = memory.advice(cfg, Placement(processes=4, device="cuda", precision="bf16"), 28, target)
    assert "--config_file accelerate_configs/deepspeed_zero3.yaml" in [a["change"] for a in on_four if a["fits"]]


def test_an_accelerate_config_file_gives_its_topology():
    zero3 = from_accelerate_config(str(ROOT / "accelerate_configs" / "deepspeed_zero3_offload.yaml"), num_processes=8)
    assert (zero3.processes, zero3.zero_stage, zero3.offload_optimizer, zero3.offload_params) == (8, 3, True, True)
    ddp = from_accelerate_config(str(ROOT / "accelerate_configs" / "multi_gpu.yaml"))
    assert (ddp.processes, ddp.zero_stage) == (2, None)
    assert from_accelerate_config(None) == Placement()


def test_an_accelerate_config_of_a_topology_emodist_does_not_launch_is_refused(tmp_path):
    (tmp_path / "tpu.yaml").write_text("distributed_type: XLA\nnum_processes: 8\n")
    with pytest.raises(errors.UsageError, match="distributed_type XLA is none that emodist launches"):
        from_accelerate_config(str(tmp_path / "tpu.yaml"))
    (tmp_path / "bad.yaml").write_text("distributed_type: NO\nnum_processes: [1\n")
    with pytest.raises(errors.UsageError) as refused:
        from_accelerate_config(str(tmp_path / "bad.yaml"))
    assert str(refused.value).startswith(f"--config_file {tmp_path / 'bad.yaml'}:3: not valid YAML (") and "\n" not in str(
        refused.value)


@pytest.mark.parametrize(("content", "said"), [
    # found by a new user: -2 processes planned as "fits" with a negative size; 'two', a deepspeed_config of 3 and
    # half a machine internal errors; a run's config.yaml planned as one process
    ("distributed_type: MULTI_GPU\nnum_processes: -4\n", "num_processes: -4: must be a whole number, 1 or more"),
    ("distributed_type: MULTI_GPU\nnum_processes: two\n", "num_processes: 'two': must be a whole number, 1 or more"),
    ("distributed_type: MULTI_GPU\nnum_processes: 2.7\n", "num_processes: 2.7: must be a whole number, 1 or more"),
    ("distributed_type: MULTI_GPU\nnum_processes: 2\nnum_machines: 0.5\n",
     "num_machines: 0.5: must be a whole number, 1 or more"),
    ("distributed_type: DEEPSPEED\nnum_processes: 2\ndeepspeed_config: 3\n",
     "deepspeed_config: 3: must be a mapping of DeepSpeed settings (zero_stage: 3, ...), as accelerate config writes it"),
    ("variant: minilm\ntrain:\n  epochs: 2\n",
     "not an accelerate config (no distributed_type): an emodist run config goes to --config"),
    ("distributed_type: MULTI_GPU\nnum_processes: 3\nnum_machines: 2\n",
     "3 num_processes ({file}) over 2 num_machines ({file}): give each machine as many processes, a multiple of 2"),
])
def test_an_accelerate_config_s_bad_values_are_refused_naming_the_file_and_key(tmp_path, content, said):
    file = tmp_path / "accelerate.yaml"
    file.write_text(content)
    with pytest.raises(errors.UsageError) as refused:
        from_accelerate_config(str(file))
    said = said.format(file=file)
    assert str(refused.value) == (said if said[0].isdigit() else f"--config_file {file}: {said}")


@pytest.mark.parametrize(("content", "said"), [
    ('{"zero_optimization": {"sta', "the DeepSpeed config does not read as JSON (Unterminated string"),
    ('{"zero_optimization": {"stage": "two"}}', "zero_optimization.stage is 'two': ZeRO's stages are 0, 1, 2 and 3"),
    ('{"zero_optimization": []}', "zero_optimization is [], not a mapping of ZeRO's settings"),
    (b'{"zero_optimization": {"stage": 2}, "caf\xe9": 1}', "the DeepSpeed config does not read as JSON ("),
])
def test_a_deepspeed_config_that_does_not_read_is_named_by_planning_and_training(tmp_path, monkeypatch, content, said):
    """Training failed inside Accelerator() (JSONDecodeError) or reading the stage (ValueError), internal errors
    both; the plan blamed the working directory ("run from the directory it is relative to")."""
    from emodist.train import distributed

    file = tmp_path / "zero.json"
    file.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "zero.yaml").write_text((ROOT / "accelerate_configs" / "deepspeed_zero2.yaml").read_text().replace(
        "accelerate_configs/deepspeed/zero2.json", str(file)))
    with pytest.raises(errors.UsageError) as planned:
        from_accelerate_config(str(tmp_path / "zero.yaml"))
    assert str(planned.value).startswith(f"{file}: {said}")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what accelerate launch sets for a training process
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(file))
    with pytest.raises(errors.UsageError) as launched:
        distributed.launched_zero_stage()
    assert str(launched.value) == str(planned.value)


def test_an_accelerate_config_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes(b'distributed_type: "NO"\nnum_processes: 1   # caf\xe9\n')
    with pytest.raises(errors.UsageError, match=r"^--config_file .*latin1.yaml: not UTF-8 \(byte 47\): save it as UTF-8$"):
        from_accelerate_config(str(tmp_path / "latin1.yaml"))


def test_zero3_counts_the_weights_deepspeed_keeps_gathered(tmp_path):
    """Beyond its estimators, ZeRO-3 keeps up to stage3_max_live_parameters weights gathered for reuse (measured
    on CPU, Gemma-2B over 2 processes: 1e9 instead of 1e8 peaks 1.8 GiB higher); the plan reads the limit from
    the DeepSpeed config the accelerate config names, and leaves DeepSpeed's model states as they were."""
    settings = json.loads((ROOT / "accelerate_configs" / "deepspeed" / "zero3.json").read_text())
    settings["zero_optimization"]["stage3_max_live_parameters"] = 1e8
    (tmp_path / "zero3.json").write_text(json.dumps(settings))
    (tmp_path / "zero3.yaml").write_text((ROOT / "accelerate_configs" / "deepspeed_zero3.yaml").read_text().replace(
        "accelerate_configs/deepspeed/zero3.json", str(tmp_path / "zero3.json")))
    fewer = from_accelerate_config(str(tmp_path / "zero3.yaml"), device="cpu")
    default = from_accelerate_config(str(ROOT / "accelerate_configs" / "deepspeed_zero3.yaml"), device="cpu")
    assert (fewer.max_live_parameters, default.max_live_parameters) == (10**8, 10**9)
    cfg = config.load("gemma-lora")  # 2.5B weights: more than either limit besides the largest layer
    rows = [{row.name: row.bytes for row in memory.plan(cfg, placement, 28).rows} for placement in (fewer, default)]
    assert (rows[0]["live gathered weights"], rows[1]["live gathered weights"]) == (2 * 10**8, 2 * 10**9)
    assert {k: v for k, v in rows[0].items() if k != "live gathered weights"} == {
        k: v for k, v in rows[1].items() if k != "live gathered weights"}
    assert "live gathered weights" not in memory.MODEL_STATES
    small = memory.plan(config.load("distilbert"), default, 28)  # 66M weights: all of them, past the largest
    assert {row.name: row.bytes for row in small.rows}["live gathered weights"] == 2 * (
        small.shapes.total - small.shapes.largest_layer)


def plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch" / "plan.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**os.environ, "COLUMNS": "160"})


def test_plan_prints_the_table_and_a_verdict_offline():
    result = plan("--variant", "mistral-qlora", "--gpu-memory", "12GB")
    assert result.returncode == 0, result.stderr
    assert "base weights" in result.stdout and "Linear weights in 4-bit NF4" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("fits: ")
    assert "per process of 11.2 GiB of --gpu-memory 12GB" in result.stdout


def test_a_terminal_of_no_width_still_gets_the_plan_and_its_verdict():
    """COLUMNS=0 (a container's unsized terminal): plan printed nothing, exit 0, and training nothing on stdout."""
    for columns in ("0", "1"):
        result = subprocess.run([sys.executable, str(ROOT / "launch" / "plan.py"), "--variant", "mistral-qlora",
                                 "--gpu-memory", "12GB"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                                env={**os.environ, "COLUMNS": columns})
        assert result.returncode == 0, result.stderr
        assert "base weights" in result.stdout and result.stdout.strip().splitlines()[-1].startswith("fits: ")
        assert max(map(len, result.stdout.splitlines())) == 80


def test_plan_as_json_says_what_does_not_fit_and_what_to_change():
    result = plan("--variant", "mistral-lora", "--gpu-memory", "12GiB", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["fits"] is False and out["peak_bytes"] > 12 * 2**30
    assert out["peak_bytes"] == sum(row["bytes"] for row in out["rows"] if not row["on_host"])
    assert any(a["fits"] for a in out["advice"])


@pytest.mark.parametrize(("args", "line"), [
    (["--variant", "minilm", "--gpu-memory", "24 gigs"],
     "emodist: error: --gpu-memory 24 gigs: not a memory size: write a number and GB, GiB, MB, MiB, TB or TiB, "
     "e.g. 24GB"),
    (["--variant", "minilm", "--labels", "0"], "emodist: error: --labels 0: a head of 1 to 1,000,000 labels is planned"),
    (["--variant", "mistral-lora", "--labels", "100000000"],  # its id2label alone filled the machine's memory
     "emodist: error: --labels 100000000: a head of 1 to 1,000,000 labels is planned"),
    (["--variant", "minilm", "--gpu-memory", "0GB"],
     "emodist: error: --gpu-memory 0GB: less than 1 MiB; write the memory of one GPU, e.g. 24GB"),
    (["--variant", "minilm", "--num_processes", "0"], "emodist: error: --num_processes 0: must be 1 or more"),
    (["--variant", "minilm", "--num_machines", "-2"], "emodist: error: --num_machines -2: must be 1 or more"),
    (["--variant", "minilm", "--num_processes", "3", "--num_machines", "2"],
     "emodist: error: --num_processes 3 over --num_machines 2: give each machine as many processes, a multiple of 2"),
    (["--variant", "mistral-lora", "--config_file", "accelerate_configs/fsdp.yaml"],
     "emodist: error: --config_file accelerate_configs/fsdp.yaml: FSDP is not planned (the plan knows DDP and "
     "DeepSpeed ZeRO, and would count FSDP's sharded weights whole): --config_file "
     "accelerate_configs/deepspeed_zero3.yaml plans ZeRO-3, which shards the same weights, gradients and optimizer "
     "states"),
    # what training refuses, planning refuses too: it had said "fits"
    (["--variant", "mistral-qlora", "--config_file", "accelerate_configs/deepspeed_zero3_offload.yaml"],
     "emodist: error: model.quantization=nf4 with DeepSpeed parameter offload (accelerate_configs/"
     "deepspeed_zero3_offload.yaml): DeepSpeed cannot move packed 4-bit weights to the CPU and back. Use "
     "accelerate_configs/deepspeed_zero3.yaml (ZeRO-3 shards the 4-bit base, no offload), or --variant mistral-lora "
     "(a bf16 base) with the offload config"),
    (["--variant", "minilm", "--config_file", "accelerate_configs/cpu.yaml", "--num_processes", "2"],
     "emodist: error: --num_processes 2 with accelerate_configs/cpu.yaml (distributed_type NO): accelerate launch "
     "starts one process; plan several with --config_file accelerate_configs/multi_gpu.yaml (DDP) or a DeepSpeed "
     "config"),
    (["--variant", "minilm", "model.name_or_path=someone/unknown-model"],
     "emodist: error: model.name_or_path=someone/unknown-model: its shapes are not known here (the variants' bases "
     "ship theirs): point it at a local directory holding the model's config.json"),
])
def test_plan_refuses_in_one_line(args, line):
    result = plan(*args)
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.strip().splitlines() == [line]


@pytest.mark.parametrize(("change", "reason"), [
    ("{bad", "config.json there is not valid JSON (Expecting property name enclosed in double quotes"),
    ("[1, 2]", "transformers cannot build a model from it (ValueError: Unrecognized model in"),
    ({"hidden_size": 123}, "transformers cannot build a model from it (ValueError: The hidden size (123) is not a "
                           "multiple of the number of attention heads (12)"),
    ({"hidden_size": "384"}, "transformers cannot build a model from it (StrictDataclassFieldValidationError: "),
    ({"id2label": "joy"}, 'config.json there: id2label is "joy", not an object mapping label ids to names'),
])
def test_a_local_model_whose_config_json_does_not_build_is_named(tmp_path, change, reason):
    """Planned (launch/plan.py, and each run before it starts) and loaded (the builder): one line each. A value of
    another type was an internal error (huggingface_hub's StrictDataclassFieldValidationError), and so was a label
    map that is not a JSON object (transformers' AttributeError)."""
    from transformers import AutoModelForSequenceClassification

    from emodist.models.builder import load_pretrained

    base = Path(models.base_path(config.load("minilm").model))
    real = json.loads((base / "config.json").read_text())
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").symlink_to(base / "model.safetensors")
    (model / "config.json").write_text(json.dumps({**real, **change}) if isinstance(change, dict) else change)
    result = plan("--variant", "minilm", f"model.name_or_path={model}")
    assert result.returncode == errors.EXIT_USAGE and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"emodist: error: model.name_or_path={model}: {reason}"), line
    assert line.endswith("fix its config.json, or point at the directory save_pretrained wrote"
                         if reason.startswith("transformers") else "restore it from the model or run it came from"), line
    if isinstance(change, dict):  # valid JSON: transformers reads it, and fails building the model
        with pytest.raises(errors.UsageError) as loading:
            load_pretrained(AutoModelForSequenceClassification.from_pretrained, str(model))
        assert str(loading.value).startswith(f"model.name_or_path={model}: {reason}")


def test_a_null_label_map_is_transformers_default_and_no_fault(tmp_path):
    """It took the blame for what else went wrong in the directory (a weights file cut short)."""
    from emodist.models.builder import _broken_json

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "id2label": None, "label2id": None}))
    assert _broken_json(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "label2id": ["joy"]}))
    assert _broken_json(tmp_path) == 'config.json there: label2id is ["joy"], not an object mapping names to label ids'


def test_a_damaged_weights_or_tokenizer_file_of_a_local_model_is_named_in_one_line(tmp_path):
    """A weights file cut short (an interrupted copy or download) was an internal error (SafetensorError) when a run
    loaded its base, and a broken tokenizer.json was blamed on config.json."""
    from transformers import AutoModelForSequenceClassification

    from emodist.models.builder import load_pretrained, load_tokenizer

    base = Path(models.base_path(config.load("minilm").model))
    model = tmp_path / "model"
    shutil.copytree(base, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])
    with pytest.raises(errors.UsageError) as loading:
        load_pretrained(AutoModelForSequenceClassification.from_pretrained, str(model))
    assert str(loading.value).startswith(f"model.name_or_path={model}: a weights file there does not read (")
    assert str(loading.value).endswith("it is incomplete or damaged (a copy or download cut short?): restore it from "
                                       "the model or run it came from")
    (model / "tokenizer.json").write_text('{"version": "1.0", "trunc')
    with pytest.raises(errors.UsageError, match=r"^/.*/model: tokenizer.json there is not valid JSON \(") as loading:
        load_tokenizer(str(model), setting=None)  # as serving names it: by its path alone


def test_a_plan_that_does_not_fit_is_refused_in_one_line_naming_the_change():
    """What a run on a GPU does before loading a weight (emodist.train.lifecycle.plan_memory)."""
    cfg = config.load("mistral-lora")
    planned = memory.plan(cfg, Placement(device="cuda", precision="bf16"), 28)
    with pytest.raises(errors.UsageError) as refused:
        memory.check_fits(cfg, planned, Target("cuda", 14 * 2**30, "NVIDIA T4"), 28)
    assert str(refused.value) == (
        "the memory plan does not fit: 15.0 GiB per process, 989.0 MiB more than 14.0 GiB of NVIDIA T4: it fits "
        "with model.quantization=nf4 (QLoRA) (python launch/plan.py shows the plan and every option); "
        "train.check_memory=false starts it anyway")
    memory.check_fits(cfg, planned, Target("cuda", 24 * 2**30, "NVIDIA L4"), 28)  # fits: nothing raised


def test_an_fsdp_run_starts_without_a_plan_and_is_not_refused_by_one():
    """Under FSDP a run's plan would be DDP's, its sharded weights counted whole on every GPU: mistral-lora on 4
    GPUs of 12 GiB would be refused before loading. It starts without a plan instead (the banner says so)."""
    from types import SimpleNamespace

    from emodist.train.distributed import Topology
    from emodist.train.lifecycle import plan_memory

    cfg = config.load("mistral-lora")
    on_gpus = SimpleNamespace(device=torch.device("cuda", 0), mixed_precision="bf16")  # asked for nothing else
    assert plan_memory(cfg, on_gpus, Topology("FSDP", 4, 1), 28) is None
    as_ddp = memory.plan(cfg, Topology("MULTI_GPU", 4, 1).placement("cuda", "bf16"), 28)
    with pytest.raises(errors.UsageError, match="the memory plan does not fit"):
        memory.check_fits(cfg, as_ddp, Target("cuda", 12 * 2**30, "a 12 GiB GPU"), 28)
    on_cpu = SimpleNamespace(device=torch.device("cpu"), mixed_precision="no")
    assert plan_memory(cfg, on_cpu, Topology("MULTI_CPU", 2, 1), 28) is not None


def test_a_real_size_run_peaks_within_15_percent_of_its_plan(tmp_path, cache_dir):
    """distilbert at its real size (66M weights, random), every weight trained on this CPU: the plan in the
    summary against the measured peak of the training steps (resident memory), which the run's peak holds."""
    run_dir = tmp_path / "run"
    result = launch("--variant", "distilbert", "--smoke", "model.smoke_size=real", "train.max_steps=6",
                    "train.eval_every_steps=0", "--output-dir", str(run_dir), accelerate=False)
    assert result.returncode == 0, result.stderr[-3000:]
    perf = read_summary(run_dir)["perf"]
    assert perf["planned_peak_bytes"] == sum(perf["memory_plan"].values())
    assert 0.85 <= perf["planned_peak_bytes"] / perf["training_peak_memory_bytes"] <= 1.15, perf
    assert 0 < perf["training_peak_memory_bytes"] <= perf["peak_memory_bytes"]
    assert "memory plan" in result.stdout


def test_a_finished_run_s_config_plans_with_its_data_moved_away(tmp_path):
    """`plan.py --config RUN/config.yaml --labels 28` refused once the run's data had moved: the plan reads none."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config.dump(config.load("minilm", overrides=[f"data.data_dir={data_dir}"]), tmp_path / "config.yaml")
    data_dir.rmdir()
    result = plan("--config", str(tmp_path / "config.yaml"), "--labels", "28")
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1].startswith("fits: "), result.stderr
    assert plan("--config", str(tmp_path / "config.yaml")).stderr.strip() == (  # the labels are the data's to count
        f"emodist: error: data.data_dir: {data_dir} is not a directory [{tmp_path / 'config.yaml'}:22]")
