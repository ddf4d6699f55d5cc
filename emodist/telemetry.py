"""Throughput and memory of a run, measured without adding host syncs to the training step.

    meter = Throughput(device); meter.resume()
    for batch in loader: ...; meter.count(batch)
    meter.pause()                                   # around evaluation and saving
    totals = meter.totals(accelerator)              # summed over ranks, once, at the end

Samples are counted from tensor shapes (known on the host); real tokens (attention mask) are summed on
the device and only read at log intervals. Padded tokens are what the model computes on.
"""

from __future__ import annotations

import resource
import time

import torch


class Throughput:
    def __init__(self, device: torch.device):
        self.samples = 0
        self.padded_tokens = 0
        self.real_tokens = torch.zeros((), dtype=torch.long, device=device)
        self.seconds = 0.0
        self._started: float | None = None
        self._mark = (0, 0.0)  # (samples, seconds) at the last `interval()`

    def resume(self) -> None:
        if self._started is None:
            self._started = time.perf_counter()

    def pause(self) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def count(self, batch: dict) -> None:
        ids = batch["input_ids"]
        self.samples += ids.shape[0]
        self.padded_tokens += ids.numel()
        self.real_tokens += batch["attention_mask"].sum()

    def elapsed(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.seconds + running

    def interval(self) -> float:
        """This rank's samples/s since the previous call."""
        samples, seconds = self.samples, self.elapsed()
        rate = (samples - self._mark[0]) / max(seconds - self._mark[1], 1e-9)
        self._mark = (samples, seconds)
        return rate

    def totals(self, accelerator) -> dict:
        """Run totals over all ranks (a collective: call it on every rank)."""
        counts = torch.tensor([self.samples, self.padded_tokens, int(self.real_tokens)], device=accelerator.device)
        samples, padded, real = (int(v) for v in accelerator.reduce(counts, reduction="sum"))
        seconds = max(self.elapsed(), 1e-9)
        return {
            "train_seconds": seconds,
            "train_samples": samples,
            "train_samples_per_s": samples / seconds,
            "train_tokens_per_s": real / seconds,
            "train_padded_tokens_per_s": padded / seconds,
            "padding_efficiency": real / max(padded, 1),
        }


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process: CUDA allocated bytes on a GPU, peak resident set size on a CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def peak_memory_per_rank(accelerator) -> list[int]:
    """Every rank's `peak_memory_bytes`, in rank order (a collective)."""
    mine = torch.tensor([peak_memory_bytes(accelerator.device)], dtype=torch.long, device=accelerator.device)
    return [int(v) for v in accelerator.gather(mine)]
