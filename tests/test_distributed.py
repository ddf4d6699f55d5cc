"""Scale-out on the CPU machine: real multi-process launches through `accelerate launch` and accelerate_configs/.

Every topology runs the same launch/train.py; on a machine without CUDA the ranks talk over gloo. The
runs are short (tiny models, a few hundred steps at most); DeepSpeed compiles two small ops on the
first run of a machine (~30 s, plus ~50 s for the offload optimizer), cached afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, Ahead, error_lines, launch, read_metrics, read_summary, rescore_dev
from safetensors import safe_open

from emodist import config, data, models
from emodist.runtime.errors import UsageError
from emodist.train import distributed

pytestmark = pytest.mark.alone  # two-process launches (tests/conftest.py: `in_core_order`)

CONFIGS = ROOT / "accelerate_configs"
# an fp32 LoRA run without dropout: what differs between topologies is then only the arithmetic order;
# length-grouped batches (the default outside --smoke), whose steps must not depend on the topology
EXACT = ["model.dtype=float32", "train.mixed_precision=no", "model.lora.dropout=0", "data.group_by_length=true",
         "train.max_steps=160", "train.log_every_steps=1", "train.save_every_steps=80"]


def train_losses(run_dir: Path) -> np.ndarray:
    return np.array([r["train/loss"] for r in read_metrics(run_dir) if "train/loss" in r])


def run_ok(run_dir: Path, *args: str, **launch_kwargs) -> Path:
    result = launch(*args, "--output-dir", str(run_dir), **launch_kwargs)
    assert result.returncode == 0, result.stderr[-4000:]
    return run_dir


@pytest.fixture(scope="module")
def exact_runs(tmp_path_factory, cache_dir) -> dict[str, Path]:
    """gemma-lora --smoke three ways with the same global batch of 16: one process accumulating 2
    micro-batches, two DDP processes, two ZeRO-2 processes."""
    root = tmp_path_factory.mktemp("exact")
    args = ("--variant", "gemma-lora", "--smoke", *EXACT)
    ahead = Ahead()  # the one-process run beside the two-process ones, which leave part of a core idle
    try:
        ahead.start("single", *args, "--output-dir", str(root / "single"))
        runs = {"ddp": run_ok(root / "ddp", *args, config_file="multi_gpu.yaml", num_processes=2),
                "zero2": run_ok(root / "zero2", *args, config_file="deepspeed_zero2.yaml", num_processes=2)}
        single = ahead.get("single")
        assert single.returncode == 0, single.stderr[-4000:]
    finally:
        ahead.close()
    return {"single": root / "single", **runs}


def test_ddp_runs_two_real_ranks(exact_runs):
    summary = read_summary(exact_runs["ddp"])
    assert (summary["num_processes"], summary["num_nodes"]) == (2, 1)
    assert (summary["distributed_type"], summary["zero_stage"]) == ("MULTI_CPU", None)
    assert len(summary["perf"]["peak_memory_bytes_per_rank"]) == 2
    assert min(summary["perf"]["peak_memory_bytes_per_rank"]) > 0
    # the global batch is kept: two ranks x micro 8 need no accumulation, one rank needs 2
    assert summary["train"]["gradient_accumulation_steps"] == 1
    assert read_summary(exact_runs["single"])["train"]["gradient_accumulation_steps"] == 2


def test_two_processes_train_the_same_curve_as_one_accumulating(exact_runs):
    single, ddp = train_losses(exact_runs["single"]), train_losses(exact_runs["ddp"])
    assert len(single) == len(ddp) == 160
    assert single[-10:].mean() < 0.9 * single[:10].mean()  # it did learn: the comparison is not of constants
    np.testing.assert_allclose(ddp, single, rtol=1e-4)
    dev_single, dev_ddp = read_summary(exact_runs["single"])["dev"], read_summary(exact_runs["ddp"])["dev"]
    assert dev_ddp["loss"] == pytest.approx(dev_single["loss"], rel=1e-4)
    assert dev_ddp["f1_micro"] == pytest.approx(dev_single["f1_micro"], abs=1e-6)


def test_zero2_trains_the_same_curve_as_ddp(exact_runs):
    summary = read_summary(exact_runs["zero2"])
    assert (summary["distributed_type"], summary["zero_stage"], summary["num_processes"]) == ("DEEPSPEED", 2, 2)
    np.testing.assert_allclose(train_losses(exact_runs["zero2"]), train_losses(exact_runs["ddp"]), rtol=1e-4)
    lrs = [r["train/lr"] for r in read_metrics(exact_runs["zero2"]) if "train/lr" in r]
    assert lrs == [r["train/lr"] for r in read_metrics(exact_runs["ddp"]) if "train/lr" in r]


@pytest.mark.parametrize("topology", ["ddp", "zero2"])
def test_distributed_export_reloads_with_the_reported_dev_scores(exact_runs, topology):
    run_dir = exact_runs[topology]
    summary = read_summary(run_dir)
    rescored, _ = rescore_dev(run_dir)
    assert summary["dev"]["f1_micro"] > 0.1  # learned something, so agreement means something
    assert rescored["f1_micro"] == pytest.approx(summary["dev"]["f1_micro"], abs=1e-6)
    assert rescored["loss"] == pytest.approx(summary["dev"]["loss"], rel=1e-4)


def test_distributed_checkpoints_hold_every_rank(exact_runs):
    ddp = exact_runs["ddp"] / "checkpoints" / "step-160"
    assert {p.name for p in ddp.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    zero2 = exact_runs["zero2"] / "checkpoints" / "step-160"
    assert len(list(zero2.glob("pytorch_model/*optim_states.pt"))) == 2  # one optimizer shard per rank
    assert json.loads((zero2 / "state.json").read_text())["num_processes"] == 2


# ---------------------------------------------------------------------------------------------------
# ZeRO-3


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory, cache_dir) -> Path:
    """mistral-lora --smoke under ZeRO-3 (bf16 base, DeepSpeed bf16), with a dev split of 251 examples:
    not divisible by the 2 processes or by the eval batch."""
    return run_ok(tmp_path_factory.mktemp("zero3") / "run", "--variant", "mistral-lora", "--smoke",
                  "train.max_steps=160", "data.max_eval_examples=251",
                  config_file="deepspeed_zero3.yaml", num_processes=2)


def test_zero3_run_is_recorded(zero3_run):
    summary = read_summary(zero3_run)
    assert (summary["distributed_type"], summary["zero_stage"]) == ("DEEPSPEED", 3)
    assert (summary["num_processes"], summary["num_nodes"]) == (2, 1)
    # ZeRO-3 leaves each rank an empty local tensor: the counts are of the real weights
    assert summary["params"]["trainable"] == 14_720 and summary["params"]["total"] > 90_000


def test_zero3_adapter_holds_full_weights(zero3_run):
    """Not the empty adapters of ZeRO-3 exports gone wrong: every tensor at its full shape."""
    from peft import get_peft_model_state_dict

    cfg = config.load(config_file=str(zero3_run / "config.yaml"))
    local = models.build_model(cfg.model, data.SYNTHETIC_CUES, str(zero3_run / "smoke-base"), torch.device("cpu"))
    expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(local.model).items()}
    with safe_open(zero3_run / "model" / "adapter_model.safetensors", "pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
        assert all(f.get_tensor(k).abs().sum() > 0 for k in f.keys())  # noqa: SIM118
    assert saved == expected
    assert any("score" in k for k in saved) and any("lora_A" in k for k in saved)


def test_zero3_export_reloads_with_the_reported_dev_scores(zero3_run):
    summary = read_summary(zero3_run)
    rescored, _ = rescore_dev(zero3_run)
    assert summary["dev"]["f1_micro"] > 0.1
    assert rescored["f1_micro"] == pytest.approx(summary["dev"]["f1_micro"], abs=1e-6)
    # DeepSpeed computed the whole model in bf16; the reload autocasts: equal up to bf16 rounding
    assert rescored["loss"] == pytest.approx(summary["dev"]["loss"], rel=2e-2)


def test_uneven_eval_split_counts_every_example_once(zero3_run):
    summary = read_summary(zero3_run)
    assert summary["dev"]["num_examples"] == 251 and summary["test"]["num_examples"] == 251
    support = sum(label["support"] for label in summary["dev"]["per_label"].values())
    rescored, _ = rescore_dev(zero3_run)
    assert support == sum(label["support"] for label in rescored["per_label"].values())


def test_zero3_full_fine_tune_export_gathers_every_shard(tmp_path, cache_dir):
    """A full fine-tune under ZeRO-3: each rank holds half of every weight; model/ must hold all of them."""
    run_dir = run_ok(tmp_path / "run", "--variant", "distilbert", "--smoke", "train.max_steps=160",
                     config_file="deepspeed_zero3.yaml", num_processes=2)
    summary = read_summary(run_dir)
    index = json.loads((run_dir / "model" / "model.safetensors.index.json").read_text())
    # every weight, once, in the precision DeepSpeed trains in: it gathers bf16 weights where the CPU computes bf16
    width = 2 if summary["mixed_precision"] in ("bf16", "fp16") else 4
    assert index["metadata"]["total_size"] == width * summary["params"]["total"]
    rescored, _ = rescore_dev(run_dir)
    assert summary["dev"]["f1_micro"] > 0
    # DeepSpeed's bf16 computes everything in bf16, norms included; the reload's autocast keeps norms and
    # softmax in float32: 1.7e-5 apart (measured on an Intel Xeon with AMX). A missing shard is far off.
    assert rescored["loss"] == pytest.approx(summary["dev"]["loss"], rel=1e-5 if width == 4 else 1e-4)
    # that rounding may flip a decision that sits at 0.5: one of the 251 x 6 moves micro-F1 by about 0.004
    # (it did on the smoke set's dev split since 2026-12-07: 0.1167 against 0.1129); in float32, none moves
    assert rescored["f1_micro"] == pytest.approx(summary["dev"]["f1_micro"], abs=1e-6 if width == 4 else 0.01)


@pytest.mark.slow  # 2 minutes in CI, which runs ZeRO-3 without offload (zero3_run) and the offload refusals
def test_zero3_offload_trains(tmp_path, cache_dir):
    run_dir = run_ok(tmp_path / "run", "--variant", "mistral-lora", "--smoke", "train.max_steps=20",
                     config_file="deepspeed_zero3_offload.yaml", num_processes=2)
    summary = read_summary(run_dir)
    assert (summary["zero_stage"], summary["num_processes"]) == (3, 2)
    losses = train_losses(run_dir)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert (run_dir / "model" / "adapter_model.safetensors").stat().st_size > 20_000


def test_qlora_under_ddp_gives_each_rank_its_4bit_model(tmp_path, cache_dir):
    import bitsandbytes as bnb

    run_dir = run_ok(tmp_path / "run", "--variant", "mistral-qlora", "--smoke", "train.max_steps=160",
                     config_file="multi_gpu.yaml", num_processes=2)
    summary = read_summary(run_dir)
    assert (summary["distributed_type"], summary["num_processes"], summary["quantization"]) == ("MULTI_CPU", 2, "nf4")
    rescored, model = rescore_dev(run_dir)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert rescored["f1_micro"] == pytest.approx(summary["dev"]["f1_micro"], abs=1e-6)


def test_qlora_under_zero3_stores_4bit_weights_in_the_compute_dtype(tmp_path, cache_dir):
    run_dir = run_ok(tmp_path / "run", "--variant", "mistral-qlora", "--smoke", "train.max_steps=20",
                     config_file="deepspeed_zero3.yaml", num_processes=2)
    summary = read_summary(run_dir)
    assert (summary["zero_stage"], summary["mixed_precision"]) == (3, "bf16")
    assert json.loads((run_dir / "model" / "config.json").read_text())["quantization_config"][
        "bnb_4bit_quant_storage"] == "bfloat16"
    assert np.isfinite(train_losses(run_dir)).all()


# ---------------------------------------------------------------------------------------------------
# Refusals: one line from emodist (the launcher then reports the failed ranks in its own words)


def test_qlora_with_parameter_offload_is_refused_in_one_line(tmp_path, cache_dir):
    result = launch("--variant", "mistral-qlora", "--smoke", "--output-dir", str(tmp_path / "run"),
                    config_file="deepspeed_zero3_offload.yaml", num_processes=2, launcher_args=("-q",))
    assert result.returncode != 0
    line = ("emodist: error: model.quantization=nf4 with DeepSpeed parameter offload "
            "(accelerate_configs/deepspeed/zero3_offload.json): DeepSpeed cannot move packed 4-bit weights to the "
            "CPU and back. Use accelerate_configs/deepspeed_zero3.yaml (ZeRO-3 shards the 4-bit base, no offload), "
            "or --variant mistral-lora (a bf16 base) with the offload config")
    assert error_lines(result) == [line]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    # the launcher's own summary of the failed ranks comes last (`-q`: without accelerate's traceback); its
    # root cause is emodist's line, not a link to torch's docs
    summary = result.stderr[result.stderr.index("Root Cause (first observed failure):"):]
    assert f"traceback : {line}" in summary and "Traceback (most recent call last)" not in result.stderr


def test_a_deepspeed_json_not_found_from_where_training_runs_is_named(tmp_path, monkeypatch):
    """accelerate passes the config's relative deepspeed_config_file on as written; run from elsewhere, accelerate
    would fail deep inside with a traceback."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "accelerate_configs/deepspeed/zero2.json")
    monkeypatch.chdir(ROOT)
    assert distributed.launched_zero_stage() == 2
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as refused:
        distributed.launched_zero_stage()
    assert str(refused.value) == (
        f"the accelerate config's deepspeed_config_file accelerate_configs/deepspeed/zero2.json is not a file here "
        f"({tmp_path}): a relative path is read from the directory training runs in: launch from the one it is "
        "relative to (the repository, for accelerate_configs/), or write it as an absolute path")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")  # inline settings: accelerate's word for no file
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert distributed.launched_zero_stage() == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_fsdp_without_cuda_is_refused_in_one_line(tmp_path, cache_dir):
    result = launch("--variant", "mistral-lora", "--smoke", "--output-dir", str(tmp_path / "run"),
                    config_file="fsdp.yaml", num_processes=2)
    assert result.returncode != 0
    assert error_lines(result) == [
        "emodist: error: FSDP needs CUDA GPUs, and this machine has none (accelerate would quietly run plain DDP "
        "instead): shard on CPUs with --config_file accelerate_configs/deepspeed_zero3.yaml, or use "
        "multi_gpu.yaml for DDP"]


def test_a_distributed_launch_s_variables_left_in_the_shell_are_named_in_one_line(tmp_path, cache_dir):
    """`WORLD_SIZE=2 python launch/train.py ...` (an exported variable of an earlier job) and a LOCAL_WORLD_SIZE that
    is no number were internal errors, "a bug in emodist"."""
    run_dir = tmp_path / "run"
    for variables, said in (({"WORLD_SIZE": "2"}, (
            "emodist: error: a distributed launch's variables are set (WORLD_SIZE=2), but it does not start "
            "(accelerate: Tried to launch on distributed with multinode, but `MASTER_ADDR` env was not set, please try "
            "exporting rank 0's hostname as `MASTER_ADDR`): start it with accelerate launch (or torchrun), or unset "
            "them to train in one process")), ({"LOCAL_WORLD_SIZE": "abc"}, (
            "emodist: error: LOCAL_WORLD_SIZE=abc: not a whole number (a launcher sets it to the processes on this "
            "node): unset it, or start the run with accelerate launch"))):
        result = launch("--variant", "distilbert", "--smoke", "--output-dir", str(run_dir), accelerate=False,
                        env=variables)
        assert error_lines(result) == [said] and result.returncode == 2
        assert not run_dir.exists()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP needs two CUDA devices")
def test_fsdp_on_gpus(tmp_path, cache_dir):
    run_dir = run_ok(tmp_path / "run", "--variant", "mistral-lora", "--smoke", "train.max_steps=40",
                     config_file="fsdp.yaml", num_processes=2)
    assert read_summary(run_dir)["distributed_type"] == "FSDP"
    rescored, _ = rescore_dev(run_dir)
    assert rescored["f1_micro"] == pytest.approx(read_summary(run_dir)["dev"]["f1_micro"], abs=1e-3)


# ---------------------------------------------------------------------------------------------------
# The other configs: two "nodes" on this machine, and the single-process ones


@pytest.mark.slow  # CI runs the same launch on two SLURM nodes (tests/test_slurm.py, mistral.sbatch)
def test_two_nodes_meet_through_the_c10d_rendezvous(tmp_path, cache_dir):
    """multi_node_zero3.yaml as two machines would run it: one launcher per node, one rank each."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = str(ROOT / "launch" / "train.py")
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "multi_node_zero3.yaml"),
             "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
             "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
             script, "--variant", "mistral-lora", "--smoke", "--output-dir", str(tmp_path / "run"),
             "train.max_steps=10"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    summary = read_summary(tmp_path / "run")
    assert (summary["num_nodes"], summary["num_processes"], summary["zero_stage"]) == (2, 2, 3)


@pytest.mark.parametrize("config_file", ["cpu.yaml", "single_gpu.yaml"])
def test_single_process_configs(tmp_path, cache_dir, config_file):
    run_dir = run_ok(tmp_path / "run", "--variant", "distilbert", "--smoke", "train.max_steps=10",
                     config_file=config_file)
    summary = read_summary(run_dir)
    assert (summary["num_processes"], summary["distributed_type"], summary["zero_stage"]) == (1, "NO", None)


def test_several_processes_asked_of_a_one_process_config_are_warned_of(tmp_path, cache_dir):
    """`accelerate launch --config_file cpu.yaml --num_processes 2` trained in one process without a word."""
    result = launch("--variant", "distilbert", "--smoke", "train.max_steps=2", "--output-dir", str(tmp_path / "run"),
                    config_file="cpu.yaml", num_processes=2, launcher_args=("--main_process_port", "29731"))
    assert result.returncode == 0, result.stderr[-4000:]
    assert read_summary(tmp_path / "run")["num_processes"] == 1
    assert ("emodist: warning: accelerate launch was asked for several processes (--num_processes, or its config's) "
            "and started this one alone") in " ".join(result.stdout.split())
    alone = launch("--variant", "distilbert", "--smoke", "train.max_steps=2", "--output-dir", str(tmp_path / "one"),
                   config_file="cpu.yaml")
    assert alone.returncode == 0 and "asked for several processes" not in alone.stdout + alone.stderr


def test_only_accelerate_s_one_process_launcher_is_taken_for_dropped_processes(monkeypatch):
    """A plain `python launch/train.py` with accelerate's precision variable and a MASTER_PORT was warned of; an
    MVAPICH group was not told apart from one process."""
    for name in ("ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_USE_CPU", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                 "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("MASTER_PORT", "29555")
    assert distributed.dropped_processes(1) is None  # plain python
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert distributed.dropped_processes(1).startswith("accelerate launch was asked for several processes")
    assert distributed.dropped_processes(2) is None  # the group did start
    monkeypatch.setenv("MV2_COMM_WORLD_SIZE", "2")
    assert distributed.dropped_processes(1) is None


def test_every_config_file_parses_and_is_launched_by_a_test():
    from accelerate.commands.config.config_args import load_config_from_file

    sources = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    for path in sorted(CONFIGS.glob("*.yaml")):
        header = path.read_text().splitlines()[:12]
        assert any("accelerate launch --config_file accelerate_configs/" + path.name in line for line in header), (
            f"{path.name}: the header should give its launch command")
        config = load_config_from_file(str(path))
        assert config.compute_environment.value == "LOCAL_MACHINE"
        assert f'"{path.name}"' in sources, f"no test launches {path.name}"
        if config.distributed_type.value == "DEEPSPEED":
            ds_file = ROOT / yaml.safe_load(path.read_text())["deepspeed_config"]["deepspeed_config_file"]
            ds = json.loads(ds_file.read_text())
            for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                        "gradient_clipping"):
                assert ds[key] == "auto", f"{ds_file.name}: {key} belongs to the run config"
            assert ds["bf16"]["enabled"] == ds["fp16"]["enabled"] == "auto"


# ---------------------------------------------------------------------------------------------------
# The support matrix and the DeepSpeed keys emodist owns (no launch)

ZERO3 = distributed.Topology("DEEPSPEED", 2, 1, zero_stage=3, ds_config_file="zero3.json")
ZERO3_OFFLOAD = distributed.Topology("DEEPSPEED", 2, 1, zero_stage=3, offload_optimizer="cpu", offload_param="cpu",
                                     ds_config_file="zero3_offload.json")
DDP = distributed.Topology("MULTI_GPU", 2, 1)


@pytest.mark.parametrize(("variant", "overrides", "topology", "refusal"), [
    ("mistral-qlora", [], ZERO3_OFFLOAD, "model.quantization=nf4 with DeepSpeed parameter offload (zero3_offload.json)"),
    ("mistral-lora", ["optim.name=adamw_8bit"], ZERO3_OFFLOAD, "optim.name=adamw_8bit with DeepSpeed optimizer offload"),
    ("mistral-qlora", ["model.quantization=int8"], ZERO3, "model.quantization=int8 under ZeRO-3 (zero3.json)"),
    ("mistral-qlora", [], ZERO3, None),
    ("mistral-qlora", ["model.quantization=int8"], DDP, None),
    ("mistral-lora", [], ZERO3_OFFLOAD, None),
])
def test_support_matrix(variant, overrides, topology, refusal):
    cfg = config.load(variant, overrides=overrides)
    if refusal is None:
        distributed.check_support(cfg, topology)
        return
    with pytest.raises(UsageError) as caught:
        distributed.check_support(cfg, topology)
    message = str(caught.value)
    assert message.startswith(refusal) and "\n" not in message
    assert " use " in message.lower() or "set optim.name=adamw" in message.lower()  # names the way out


def test_4bit_weights_are_stored_in_the_compute_dtype_only_where_parameters_are_sharded():
    qlora = config.load("mistral-qlora")
    assert distributed.quant_storage_dtype(qlora, ZERO3) == "bfloat16"
    assert distributed.quant_storage_dtype(qlora, distributed.Topology("FSDP", 2, 1)) == "bfloat16"
    assert distributed.quant_storage_dtype(qlora, DDP) is None
    assert distributed.quant_storage_dtype(config.load("mistral-lora"), ZERO3) is None


def test_deepspeed_auto_values_are_filled_from_the_run_config():
    cfg = config.load("gemma-lora", overrides=["optim.max_grad_norm=0.5"])
    ds = json.loads((CONFIGS / "deepspeed" / "zero3.json").read_text())
    distributed.apply_owned_values(ds, distributed.owned_deepspeed_values(cfg, accumulation=2, zero_stage=3), "z3")
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (
        cfg.train.micro_batch_size, 2, cfg.train.global_batch_size)
    assert ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_a_hard_coded_deepspeed_value_that_disagrees_is_refused_by_key():
    cfg = config.load("gemma-lora")
    ds = {"gradient_accumulation_steps": 4, "train_micro_batch_size_per_gpu": cfg.train.micro_batch_size,
          "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": False}}
    with pytest.raises(UsageError) as caught:
        distributed.apply_owned_values(ds, distributed.owned_deepspeed_values(cfg, 2, 3), "my_ds.json")
    assert str(caught.value) == (
        "my_ds.json: gradient_accumulation_steps=4 but train.global_batch_size / (micro_batch_size x processes) "
        "gives 2; zero_optimization.stage3_gather_16bit_weights_on_model_save=False but the model export gives "
        'True: set these keys to "auto" (emodist derives them)')


def test_topology_reads_as_words():
    assert ZERO3_OFFLOAD.describe() == (
        "2 processes on 1 node, DEEPSPEED ZeRO-3 (optimizer offload: cpu, parameter offload: cpu)")
    assert distributed.Topology("NO", 1, 1).describe() == "1 process on 1 node, NO"
