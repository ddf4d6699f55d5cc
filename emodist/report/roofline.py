"""What this machine's matrix multiplications reach at a model's own shapes: the CPU's peak for MFU.

A GPU has a datasheet peak (`telemetry.PEAK_TFLOPS`). A CPU has none a run could trust: the clock under
load, the cores given to this process and the BLAS kernels for this instruction set decide it, and small
GEMMs run far below a big one's rate. So emodist measures it where it trains: `torch.mm` at the shapes of
the model's linear layers for one micro-batch (the forward product, the input gradient, and the weight
gradient of the trained layers), each the best of a few timings, with the threads and the dtype of the
run. The rate is FLOP-weighted: the GEMMs' FLOPs over the time they take at those speeds, the ceiling of
a step that did nothing but its matrix multiplications.

    gemms = model_gemms(model, tokens=672, rows=32, head=["pooler", "classifier"])
    rate = gemm_rate(gemms, torch.float32)          # FLOP/s
    rate = cached_gemm_rate(gemms, torch.float32, cache_root)   # measured once per machine and shapes

`bench/roofline.py` prints the per-shape table for a variant.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from emodist.runtime import files

MAX_CALL_FLOPS = 2e9
"""A shape whose product takes more is measured with fewer rows (the rate of a GEMM this size no longer
depends on its row count), so that a 7B model's measurement takes seconds, not minutes."""
MIN_TIMING_SECONDS = 0.02
"""Each timing repeats the product until it lasts at least this long; the best of `TIMINGS` counts."""
TIMINGS = 7


@dataclass(frozen=True)
class Gemm:
    """`count` products of an (m x k) and a (k x n) matrix per micro-batch."""

    m: int
    n: int
    k: int
    count: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k * self.count


def gemms_of(linears: list[tuple[str, int, int, bool]], tokens: int, rows: int, head: list[str]) -> list[Gemm]:
    """The GEMMs of one training micro-batch through `linears` (qualified name, in_features, out_features,
    weight trained): `tokens` rows for the body's layers, `rows` (the texts) for the head's modules (those
    whose name holds a part in `head`, which see one vector per text)."""
    shapes: Counter = Counter()
    for name, fan_in, fan_out, trained in linears:
        m = rows if any(part in head for part in name.split(".")) else tokens
        shapes[(m, fan_out, fan_in)] += 1  # forward: (m x in) @ (in x out)
        shapes[(m, fan_in, fan_out)] += 1  # input gradient: (m x out) @ (out x in)
        if trained:
            shapes[(fan_out, fan_in, m)] += 1  # weight gradient: (out x m) @ (m x in)
    return [Gemm(m, n, k, count) for (m, n, k), count in sorted(shapes.items())]


def model_gemms(model: torch.nn.Module, tokens: int, rows: int, head: list[str]) -> list[Gemm]:
    """`gemms_of` for the linear layers of a built model (LoRA adapters and bitsandbytes layers included:
    they are `nn.Linear`s)."""
    linears = [(name, module.in_features, module.out_features, bool(module.weight.requires_grad))
               for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    return gemms_of(linears, tokens, rows, head)


def shape_rate(gemm: Gemm, dtype: torch.dtype) -> tuple[float, Gemm]:
    """(FLOP/s, the shape measured) of one product: the best of TIMINGS timings; a shape over MAX_CALL_FLOPS
    is measured with its rows (or its inner dimension, for a weight gradient) cut to fit."""
    measured = Gemm(gemm.m, gemm.n, gemm.k)
    if 2 * gemm.m * gemm.n * gemm.k > MAX_CALL_FLOPS:
        cut = max(1, int(MAX_CALL_FLOPS / (2 * gemm.n * gemm.k)))
        measured = Gemm(min(gemm.m, max(cut, 128)), gemm.n, gemm.k)
    a = torch.randn(measured.m, measured.k).to(dtype)
    b = torch.randn(measured.k, measured.n).to(dtype)
    out = torch.empty(measured.m, measured.n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm: first-call allocation and kernel selection
    best, repeats = float("inf"), 1
    for _ in range(TIMINGS):
        while True:
            started = time.perf_counter()
            for _ in range(repeats):
                torch.mm(a, b, out=out)
            seconds = time.perf_counter() - started
            if seconds >= MIN_TIMING_SECONDS or repeats >= 1 << 16:
                break
            repeats *= 2
        best = min(best, seconds / repeats)
    return 2 * measured.m * measured.n * measured.k / best, measured


def gemm_rate(gemms: list[Gemm], dtype: torch.dtype) -> float:
    """FLOP/s of `gemms` together: their FLOPs over the time each takes at its measured speed."""
    seconds = sum(g.flops / shape_rate(g, dtype)[0] for g in gemms)
    return sum(g.flops for g in gemms) / seconds


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or what the platform says."""
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        found = None
    return found.group(1).strip() if found else platform.processor() or "unknown CPU"


def cache_key(gemms: list[Gemm], dtype: torch.dtype) -> str:
    """What a measurement depends on: the CPU, the threads, torch, the dtype and the shapes."""
    shapes = ",".join(f"{g.m}x{g.n}x{g.k}x{g.count}" for g in gemms)
    text = f"{cpu_name()}|{torch.get_num_threads()} threads|torch {torch.__version__}|{dtype}|{shapes}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_gemm_rate(gemms: list[Gemm], dtype: torch.dtype, cache: Path, write: bool = True) -> float:
    """`gemm_rate`, measured once per cache key and kept in `cache`/roofline.json (`write=False`: read it,
    measure when absent, but leave the file to another process, e.g. the main rank)."""
    path = cache / "roofline.json"
    key = cache_key(gemms, dtype)
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}  # another shape of JSON: measured again, then replaced
    if isinstance(known.get(key), float) and math.isfinite(known[key]) and known[key] > 0:
        return known[key]
    rate = gemm_rate(gemms, dtype)
    if write:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            files.write_json(path, {**known, key: rate})
        except OSError:
            pass  # a read-only cache costs a measurement next time, nothing else
    return rate

