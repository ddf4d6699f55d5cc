"""The parts of telemetry and tracking that need no training run: step times, the FLOP count,
the GPU peak table, and how the wandb mode is chosen (the end-to-end checks are in tests/test_train.py)."""

from __future__ import annotations

import time

import pytest
import torch

from emodist import config
from emodist.report import telemetry, tracking, wandb_access
from emodist.runtime.errors import UsageError


def test_step_times_leave_out_paused_time():
    meter = telemetry.Throughput(torch.device("cpu"))
    meter.resume()
    meter.mark_step()
    with meter.paused():  # evaluation: not part of any step
        before = meter.elapsed()
        time.sleep(0.2)
        assert meter.elapsed() == before  # the clock stands still
    meter.mark_step()
    assert len(meter.step_seconds) == 2 and sum(meter.step_seconds) < 0.1
    assert meter.step_seconds[-1] == pytest.approx(meter.elapsed() - meter.step_seconds[0], abs=0.01)


def test_a_pause_after_training_does_not_start_the_clock_again():
    """The final dev and test evaluations run after training stopped the clock: it stays stopped."""
    meter = telemetry.Throughput(torch.device("cpu"))
    meter.resume()
    meter.pause()
    stopped = meter.elapsed()
    with meter.paused():
        pass
    time.sleep(0.05)
    assert meter.elapsed() == stopped


class OneProcess:
    """The part of an Accelerator that the meter's totals use, for one process."""

    device = torch.device("cpu")

    @staticmethod
    def reduce(tensor, reduction):
        return tensor


def test_a_resumed_run_s_totals_add_every_session_up():
    """A 512-step run resumed once reported only its last 192 samples: the checkpoint now carries the totals."""
    first = telemetry.Throughput(torch.device("cpu"))
    batch = {"input_ids": torch.ones(16, 10, dtype=torch.long), "attention_mask": torch.ones(16, 10, dtype=torch.long)}
    first.resume()
    for _ in range(20):
        first.count(batch, samples=16)
    first.pause()
    carried = first.carried(OneProcess())
    assert carried == {"sessions": 1, "train_seconds": first.elapsed(), "train_samples": 320, "train_tokens": 3200,
                       "train_padded_tokens": 3200}

    second = telemetry.Throughput(torch.device("cpu"))
    second.carry_over(carried)
    second.resume()
    for _ in range(12):
        second.count(batch, samples=16)
    second.pause()
    totals = second.totals(OneProcess())
    assert totals["sessions"] == 2 and totals["train_samples"] == 512 and totals["train_tokens"] == 5120
    assert totals["train_seconds"] == pytest.approx(first.elapsed() + second.elapsed())
    assert totals["train_samples_per_s"] == pytest.approx(512 / totals["train_seconds"])
    second.carry_over(None)  # a checkpoint from before the totals were kept: this session only, as before
    assert second.totals(OneProcess())["sessions"] == 2


def test_flops_per_token_is_6n_for_a_full_fine_tune_and_less_for_lora():
    n, layers, hidden, seq = 7_000_000_000, 32, 4096, 128
    attention = 12 * layers * hidden * seq
    assert telemetry.train_flops_per_token(n, n, layers, hidden, seq) == 6 * n + attention
    lora = telemetry.train_flops_per_token(n, 40_000_000, layers, hidden, seq)
    assert lora == 4 * n + 2 * 40_000_000 + attention


class _Config:  # the two spellings of layer count and width emodist's architectures use
    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_model_shape_reads_distilbert_and_llama_style_configs():
    assert telemetry.model_shape(_Config(n_layers=6, dim=768, vocab_size=30522)) == (6, 768, 30522 * 768)
    assert telemetry.model_shape(_Config(num_hidden_layers=32, hidden_size=4096, vocab_size=32000)) == (
        32, 4096, 32000 * 4096)


def test_mfu_divides_by_every_card_and_needs_a_peak(monkeypatch):
    config = _Config(num_hidden_layers=2, hidden_size=64, vocab_size=100)
    perf = {"train_tokens": 1000, "train_samples": 10, "train_tokens_per_s": 1e6}
    params = 100 * 64 + 1_000_000
    monkeypatch.delenv("EMODIST_PEAK_TFLOPS", raising=False)
    on_cpu = telemetry.mfu(perf, params, params, config, 2, torch.device("cpu"))
    assert on_cpu["mfu"] is None
    per_token = 6 * 1_000_000 + 12 * 2 * 64 * 100
    assert on_cpu["train_flops_per_token"] == per_token
    assert on_cpu["train_tflops_per_s"] == pytest.approx(per_token * 1e6 / 1e12)
    monkeypatch.setenv("EMODIST_PEAK_TFLOPS", "10")
    assert telemetry.mfu(perf, params, params, config, 2, torch.device("cpu"))["mfu"] == pytest.approx(
        per_token * 1e6 / (2 * 10e12))


@pytest.mark.parametrize("name, tflops", [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
                                          ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L4", 121.0),
                                          ("NVIDIA L40S", 362.0), ("NVIDIA A10G", 70.0), ("Some New Card", None)])
def test_peak_table_matches_the_most_specific_name(monkeypatch, name, tflops):
    monkeypatch.delenv("EMODIST_PEAK_TFLOPS", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    peak = telemetry.peak_flops(torch.device("cuda"))
    assert peak == (tflops * 1e12 if tflops else None)


@pytest.mark.parametrize("setting, env, key, expected", [
    ("auto", None, False, ("offline", True)),
    ("auto", None, True, ("online", False)),
    ("auto", "offline", True, ("offline", False)),
    ("auto", "disabled", True, ("off", False)),
    ("online", None, False, ("offline", True)),  # never a prompt, never a failure
    ("off", "online", True, ("off", False)),  # the explicit setting wins over WANDB_MODE
    ("offline", None, True, ("offline", False)),
])
def test_wandb_mode(monkeypatch, tmp_path, setting, env, key, expected):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n" if key else "")
    monkeypatch.setenv("NETRC", str(netrc))
    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    mode, notice = wandb_access.resolve_mode(setting)
    assert (mode, notice is not None) == expected


def test_a_wandb_mode_from_the_environment_is_named_as_such_and_a_bad_one_refused(monkeypatch, tmp_path):
    """WANDB_MODE=online without a key was reported as `track.wandb=online`; WANDB_MODE=bogus said it would log
    offline, then failed inside wandb's settings."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_access.resolve_mode("auto") == (
        "offline", "WANDB_MODE=online but no wandb API key is configured: logging offline instead")
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(UsageError) as refused:
        wandb_access.resolve_mode("auto")
    assert str(refused.value) == ("WANDB_MODE=bogus: not a wandb mode: set it to online, offline or disabled, or unset "
                                  "it (track.wandb, or --wandb, chooses then)")


def test_a_yaml_off_is_the_setting_off(tmp_path):
    """YAML 1.1 reads `wandb: off` as false: the refusal listed off among the values it takes."""
    file = tmp_path / "run.yaml"
    file.write_text("track:\n  wandb: off\n")
    assert config.load("minilm", str(file)).track.wandb == "off"
    file.write_text("track:\n  wandb: yes\n")  # true is no setting of track.wandb: refused as before
    with pytest.raises(UsageError, match="track.wandb=True: must be one of auto, online, offline, off"):
        config.load("minilm", str(file))


def test_run_name_carries_the_slurm_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert tracking.run_name("gemma-lora") == "gemma-lora-4242"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4240")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert tracking.run_name("gemma-lora") == "gemma-lora-4240_2"


def test_the_wandb_summary_flattens_final_metrics_and_per_label_f1():
    summary = {"dev": {"f1_macro": 0.5, "loss": 0.2, "per_label": {"joy": {"f1": 0.7}}},
               "test": {"f1_macro": 0.4, "per_label": {"joy": {"f1": 0.6}}},
               "perf": {"train_tokens_per_s": 123.0, "mfu": None, "phase_seconds": {"load": 1.5},
                        "peak_memory_bytes_per_rank": [1, 2]},
               "train": {"steps": 7}}
    assert tracking.summary_metrics(summary) == {
        "eval/f1_macro": 0.5, "eval/loss": 0.2, "eval/per_label_f1/joy": 0.7, "test/f1_macro": 0.4,
        "test/per_label_f1/joy": 0.6, "perf/train_tokens_per_s": 123.0, "perf/phase_seconds/load": 1.5,
        "train/steps": 7}


def test_the_wandb_server_is_the_one_wandb_login_host_set(monkeypatch, tmp_path):
    """After `wandb login --host https://wandb.example.org` (no WANDB_BASE_URL), runs looked for a key for
    api.wandb.ai, found none and logged offline, and probed api.wandb.ai instead of the server wandb uses."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    netrc = tmp_path / "netrc"
    netrc.write_text("machine wandb.example.org\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_access.wandb_server() == "https://api.wandb.ai"  # no settings file
    assert wandb_access.resolve_mode("auto")[0] == "offline"  # no key for api.wandb.ai
    (tmp_path / "settings").write_text("[default]\nbase_url = https://wandb.example.org\nmode = online\n")
    assert wandb_access.wandb_server() == "https://wandb.example.org"
    assert wandb_access.resolve_mode("auto") == ("online", None)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the environment comes first, as in wandb
    assert wandb_access.wandb_server() == "http://127.0.0.1:9"
    monkeypatch.delenv("WANDB_BASE_URL")
    (tmp_path / "settings").write_bytes(b"[default\nbase_url = \xff")  # unreadable: as wandb, read as empty
    assert wandb_access.wandb_server() == "https://api.wandb.ai"
