"""Throughput, step times, phases, memory and MFU of a run, measured without adding host syncs.

    meter = Throughput(device); meter.resume()
    for batch in loader: ...; meter.count(batch, samples)
        meter.mark_step()                           # at each optimizer step, after the loop's own sync
    meter.pause()                                   # around evaluation and saving
    totals = meter.totals(accelerator)              # summed over ranks, once, at the end

    phases = Phases()
    with phases.measure("load"): ...                # load, tokenize, eval, save; train comes from the meter

Samples are counted from tensor shapes (known on the host); real tokens (attention mask) are summed on
the device and only read at log intervals. Padded tokens are what the model computes on. Step times are
host clock readings taken right after the loop's once-per-step all-reduce (the stop and divergence
check), which already waits for the step's work: they cost no extra synchronisation.

MFU (model FLOPs utilisation), on GPUs only: the FLOPs the model needs for the real tokens it trained on,
per second, over the cards' dense bf16/fp16 peak (`train_flops_per_token`, `peak_flops`).
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
import torch

from emodist.runtime.errors import UsageError

CARRIED = ("train_seconds", "train_samples", "train_tokens", "train_padded_tokens")
"""The totals a checkpoint carries to the session that resumes from it (state.json `perf`)."""


class Throughput:
    """Samples, tokens and seconds of the optimizer steps on this process. A resumed run's earlier sessions
    come in through `carry_over` (from the checkpoint's state.json) and are added to every total, so a run's
    throughput covers all of its training; the step-time percentiles are of this session only."""

    def __init__(self, device: torch.device):
        self.earlier = {"sessions": 0, **dict.fromkeys(CARRIED, 0)}
        """All ranks' totals of the sessions before this one, up to the checkpoint it resumed from."""
        self.samples = 0
        self.padded_tokens = 0
        self.real_tokens = torch.zeros((), dtype=torch.long, device=device)
        self.seconds = 0.0
        self.step_seconds: list[float] = []
        """Wall time of every optimizer step on this process; evaluation and saving excluded."""
        self._started: float | None = None
        self._mark = (0, 0, 0.0)  # (samples, real tokens, seconds) at the last `interval()`
        self._step_mark = 0.0

    def resume(self) -> None:
        if self._started is None:
            self._started = time.perf_counter()

    def pause(self) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    @contextmanager
    def paused(self):
        """Stop the clock for the block; it runs again after it only if it was running before it."""
        running = self._started is not None
        self.pause()
        try:
            yield
        finally:
            if running:
                self.resume()

    def count(self, batch: dict, samples: int) -> None:
        """Count a micro-batch of `samples` texts (a packed batch holds more texts than rows)."""
        ids = batch["input_ids"]
        self.samples += samples
        self.padded_tokens += ids.numel()
        self.real_tokens += batch["attention_mask"].sum()

    def mark_step(self) -> None:
        """Close the current optimizer step's time (call it where the host has already waited for it)."""
        now = self.elapsed()
        self.step_seconds.append(now - self._step_mark)
        self._step_mark = now

    def elapsed(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.seconds + running

    def interval(self, accelerator) -> tuple[float, float]:
        """(samples/s, real tokens/s) over all ranks since the previous call: a collective that reads the
        device's token count, so the loop calls it at log intervals only."""
        counts = torch.stack([torch.tensor(self.samples, device=self.real_tokens.device), self.real_tokens])
        samples, tokens = (int(v) for v in accelerator.reduce(counts, reduction="sum"))
        seconds = self.elapsed()
        span = max(seconds - self._mark[2], 1e-9)
        rates = ((samples - self._mark[0]) / span, (tokens - self._mark[1]) / span)
        self._mark = (samples, tokens, seconds)
        return rates

    def carry_over(self, earlier: dict | None) -> None:
        """Count the sessions before this one (a checkpoint's `carried()`; None: a checkpoint without it)."""
        if earlier:
            self.earlier = {"sessions": int(earlier["sessions"]), **{k: earlier[k] for k in CARRIED}}

    def carried(self, accelerator) -> dict:
        """Every session's totals so far, all ranks summed: what a checkpoint taken now hands on (a collective)."""
        counts = torch.tensor([self.samples, self.padded_tokens, int(self.real_tokens)], device=accelerator.device)
        samples, padded, real = (int(v) for v in accelerator.reduce(counts, reduction="sum"))
        e = self.earlier
        return {"sessions": e["sessions"] + 1, "train_seconds": e["train_seconds"] + self.elapsed(),
                "train_samples": e["train_samples"] + samples, "train_tokens": e["train_tokens"] + real,
                "train_padded_tokens": e["train_padded_tokens"] + padded}

    def totals(self, accelerator) -> dict:
        """Run totals over all ranks and every session (a collective: call it on every rank)."""
        summed = self.carried(accelerator)
        samples, padded, real = summed["train_samples"], summed["train_padded_tokens"], summed["train_tokens"]
        seconds = max(summed["train_seconds"], 1e-9)
        steps = self.step_seconds
        return {
            "sessions": summed["sessions"],
            "train_seconds": seconds,
            "train_samples": samples,
            "train_tokens": real,
            "train_padded_tokens": padded,
            "train_samples_per_s": samples / seconds,
            "train_tokens_per_s": real / seconds,
            "train_padded_tokens_per_s": padded / seconds,
            "padding_efficiency": real / max(padded, 1),
            "step_seconds_median": float(np.median(steps)) if steps else None,
            "step_seconds_p90": float(np.percentile(steps, 90)) if steps else None,
        }


class Phases:
    """Seconds spent per phase of a run (load, tokenize, eval, save), on this process."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def measure(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


# --- memory ----------------------------------------------------------------------------------------------

def memory_bytes(device: torch.device) -> int:
    """Memory this process holds now: CUDA allocated bytes on a GPU, resident set size on a CPU (no sync)."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process since it started or since `reset_peak_memory`: CUDA allocated bytes on a GPU,
    peak resident set size on a CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # Linux reports KiB; its high-water mark is updated lazily, so it can trail the resident set of now
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, memory_bytes(device))


def reset_peak_memory(device: torch.device) -> int:
    """Start measuring a new peak (the training steps', which the memory plan predicts, apart from loading's
    transients); returns the peak so far. On a CPU, Linux resets the resident high-water mark (clear_refs 5,
    which ru_maxrss reads too); where it cannot, the peak stays the process's."""
    before = peak_memory_bytes(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
                clear.write("5")
        except OSError:
            pass
    return before


def peak_memory(accelerator, earlier: int = 0, training: int | None = None) -> dict:
    """Every rank's peak memory in rank order (a collective): `peak_memory_bytes_per_rank` (CUDA allocated or
    peak RSS, as `memory_kind` says, over the whole run: `earlier` is the peak before `reset_peak_memory`),
    `training_peak_memory_bytes_per_rank` (over the training steps: `training`, None when none ran) and, on
    GPUs, `peak_memory_reserved_bytes_per_rank` (the caching allocator's reservation since the steps started:
    what the card really had to hold)."""
    device = accelerator.device
    cuda = device.type == "cuda"
    mine = [max(earlier, training or 0, peak_memory_bytes(device)),
            int(torch.cuda.max_memory_reserved(device)) if cuda else 0, -1 if training is None else training]
    rows = accelerator.gather(torch.tensor([mine], dtype=torch.long, device=device)).tolist()
    allocated = [int(row[0]) for row in rows]
    trained = [int(row[2]) for row in rows]
    return {
        "memory_kind": "cuda_allocated" if cuda else "cpu_rss",
        "peak_memory_bytes_per_rank": allocated,
        "peak_memory_bytes": max(allocated),
        "training_peak_memory_bytes_per_rank": trained if min(trained) >= 0 else None,
        "training_peak_memory_bytes": max(trained) if min(trained) >= 0 else None,
        "peak_memory_reserved_bytes_per_rank": [int(row[1]) for row in rows] if cuda else None,
    }


# --- MFU -------------------------------------------------------------------------------------------------

# Dense (no sparsity) bf16/fp16 tensor-core peaks in TFLOP/s from the vendors' data sheets, matched as
# substrings of torch.cuda.get_device_name(), most specific first. EMODIST_PEAK_TFLOPS overrides them.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
    ("B200", 2250.0), ("A100", 312.0), ("A10G", 70.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("A6000", 154.8), ("RTX 4090", 165.2), ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0),
)


def peak_override() -> float | None:
    """EMODIST_PEAK_TFLOPS in FLOP/s (None when unset); UsageError unless it is a positive number of TFLOP/s.
    Lifecycle reads it at the start: a run must not learn of a typo there only once it has trained."""
    given = os.environ.get("EMODIST_PEAK_TFLOPS")
    if not given:
        return None
    try:
        tflops = float(given)
    except ValueError:
        tflops = math.nan
    if not (math.isfinite(tflops) and tflops > 0):
        raise UsageError(f"EMODIST_PEAK_TFLOPS={given}: not a positive number of TFLOP/s (the peak MFU is reported "
                         "against): write e.g. EMODIST_PEAK_TFLOPS=989.4, or unset it to use the card's datasheet")
    return tflops * 1e12


def peak_flops(device: torch.device) -> float | None:
    """One card's dense half-precision peak in FLOP/s, or None when the card is unknown (or not a GPU)."""
    if override := peak_override():
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_TFLOPS if key in name), None)


def train_flops_per_token(params: int, trainable: int, layers: int, hidden: int, seq_len: float) -> float:
    """Training FLOPs per token (model FLOPs: activation recomputation is not counted).

        forward   2·N + 4·L·d·S      every weight multiplies the token once (2 FLOPs per multiply-add);
                                     attention scores QKᵀ and the weighted sum AV take 2·d·S each per layer
        backward  2·N + 8·L·d·S      gradients with respect to the activations: twice the forward
                  + 2·N_trainable    gradients with respect to the weights, for the trainable ones only
        total     4·N + 2·N_trainable + 12·L·d·S

    N: the parameters that multiply activations (all but the token embedding table, a lookup; a 4-bit base
    counts the weights it stores); L layers of width d; S the mean sequence length. A full fine-tune gives
    6·N + 12·L·d·S, the formula of the PaLM paper (Chowdhery et al. 2022, appendix B); LoRA saves the
    weight gradients of the frozen base.
    """
    return 4 * params + 2 * trainable + 12 * layers * hidden * seq_len


def model_shape(config) -> tuple[int, int, int]:
    """(layers, hidden size, embedding parameters) from a transformers config of any emodist architecture."""
    layers = getattr(config, "num_hidden_layers", None) or config.n_layers  # DistilBERT says n_layers
    hidden = getattr(config, "hidden_size", None) or config.dim  # and dim
    return layers, hidden, config.vocab_size * hidden


def mfu(perf: dict, params_total: int, params_trainable: int, config, num_processes: int,
        device: torch.device, measured_peak: float | None = None) -> dict:
    """{"train_flops_per_token", "train_tflops_per_s", "peak_tflops_per_s", "peak_source", "mfu"} from a run's
    totals (`Throughput.totals`) and its model's parameter counts and config. The peak is one process's: on
    a GPU the card's datasheet (`peak_flops`), on a CPU `measured_peak` (emodist.report.roofline: this
    machine's GEMMs at the model's shapes); EMODIST_PEAK_TFLOPS overrides both. MFU is None without one."""
    layers, hidden, embedding = model_shape(config)
    params = params_total - embedding
    seq_len = perf["train_tokens"] / max(perf["train_samples"], 1)
    per_token = train_flops_per_token(params, min(params_trainable, params), layers, hidden, seq_len)
    achieved = per_token * perf["train_tokens_per_s"]
    peak, source = peak_flops(device), "datasheet"
    if os.environ.get("EMODIST_PEAK_TFLOPS"):
        source = "EMODIST_PEAK_TFLOPS"
    elif peak is None and measured_peak:
        peak, source = measured_peak, "measured GEMMs"
    return {"train_flops_per_token": per_token, "train_tflops_per_s": achieved / 1e12,
            "peak_tflops_per_s": peak / 1e12 if peak else None, "peak_source": source if peak else None,
            "mfu": achieved / (peak * num_processes) if peak else None}
