"""The CPU runtime settings (emodist.runtime.hostmem), checked in fresh processes: where glibc puts a 64 MiB block
with and without them, and OpenMP's wait policy set before torch loads it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from emodist.runtime import hostmem

WHERE = """
import ctypes
def where_a_big_block_lives():
    block = bytearray(64 * 2**20)  # CPython takes blocks this large from malloc
    address = ctypes.addressof((ctypes.c_char * len(block)).from_buffer(block))
    for line in open("/proc/self/maps"):
        span, *rest = line.split()
        start, end = (int(x, 16) for x in span.split("-"))
        if start <= address < end:
            return rest[-1] if len(rest) == 5 else "anonymous"
"""
"""Where glibc put a 64 MiB block: its own anonymous mapping, or the heap."""

PROBE = WHERE + """
import sys
from emodist.runtime import hostmem, process
if sys.argv[1] == "keep":
    assert hostmem.keep_freed_memory()
elif sys.argv[1] in ("steps", "rebuilt"):
    process.for_steps("cpu", rebuilds_weights=sys.argv[1] == "rebuilt")
print(where_a_big_block_lives())
hostmem.release()
"""

glibc = pytest.mark.skipif(hostmem._glibc() is None, reason="glibc's allocator only")


def where_a_big_block_lives(mode: str) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return result.stdout.strip()


@glibc
def test_kept_memory_serves_big_blocks_from_the_heap_which_glibc_otherwise_maps_afresh():
    assert where_a_big_block_lives("default") == "anonymous"  # a mapping of its own, faulted in page by page
    assert where_a_big_block_lives("keep") == "[heap]"  # reused after a free, never returned mid-run


OPENMP = """
import os, sys
from emodist.runtime import hostmem
changed = hostmem.sleeping_openmp_threads()
import torch
print(changed, os.environ.get("OMP_WAIT_POLICY"), hostmem.sleeping_openmp_threads())
"""


PHASES = WHERE + """
import runpy, sys
import emodist.train.lifecycle as lifecycle
import emodist.train.loop as loop

build, fit = lifecycle.build, loop.fit
def building(*args, **kwargs):
    print("while the model loads:", where_a_big_block_lives())
    return build(*args, **kwargs)
def fitting(session):
    print("while it trains:", where_a_big_block_lives())
    return fit(session)
lifecycle.build, loop.fit = building, fitting
sys.argv = ["launch/train.py", "--variant", "distilbert", "--smoke", "--output-dir", sys.argv[1], "train.max_steps=2",
            "train.eval_every_steps=0", "track.plots=false", "--wandb", "off"]
runpy.run_path("launch/train.py", run_name="__main__")
"""


@glibc
def test_the_allocator_keeps_freed_memory_for_the_steps_and_not_while_the_model_loads(tmp_path, cache_dir):
    """A heap that keeps what is freed, set before loading, keeps every transient buffer of the load: a 7B
    4-bit load grew to 24 GiB (bench/RESULTS.md). It is set once the model is there (process.for_steps)."""
    result = subprocess.run([sys.executable, "-c", PHASES, str(tmp_path / "run")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("while")]
    assert lines == ["while the model loads: anonymous", "while it trains: [heap]"]


HOLES = """
from emodist.runtime import process
def resident():
    status = open("/proc/self/status").read()
    return int(status.split("RssAnon:")[1].split()[0]) * 1024
blocks = [bytearray(b"x" * 100 * 1024) for _ in range(3000)]  # 300 MB from the heap, below the mmap threshold
kept = blocks[49::50]  # every 50th stays, as a loaded weight between transients: no hole is at the heap's top
del blocks
before = resident()
process.for_steps("cpu")
print((before - resident()) // 2**20)
"""


@glibc
@pytest.mark.parametrize(("steps", "where"), [("steps", "[heap]"), ("rebuilt", "anonymous")])
def test_steps_that_rebuild_weights_leave_the_allocator_alone(steps, where):
    """Steps that dequantize a 4-bit base or gather ZeRO-3's partitions free weight-sized blocks; a heap that
    keeps them grew by 0.7-3.4 GiB (bench/RESULTS.md), so there big blocks stay mappings of their own."""
    assert where_a_big_block_lives(steps) == where


@glibc
def test_the_steps_start_without_the_holes_the_load_left_in_the_heap():
    """glibc returns only the free top of its heap; the holes a load leaves stay resident (1.8 GiB after a 7B
    4-bit load) unless for_steps hands them back before the heap starts keeping what is freed."""
    result = subprocess.run([sys.executable, "-c", HOLES], capture_output=True, text=True, check=True)
    assert int(result.stdout) > 250  # of the 294 MB freed (MiB): without for_steps' release, 0


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "True PASSIVE False"),  # set before torch loads OpenMP; too late once torch is in
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "False ACTIVE False"),  # the user's choice stays
    ({"GOMP_SPINCOUNT": "300000"}, "False None False"),
])
def test_idle_openmp_threads_sleep_unless_the_user_chose(env, expected):
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    result = subprocess.run([sys.executable, "-c", OPENMP], capture_output=True, text=True, check=True,
                            env={**clean, **env})
    assert result.stdout.split("\n")[-2] == expected


WATCH_TORCH = """
import os, runpy, sys

class Watch:  # notes the wait policy at the moment torch is first imported
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "seen" not in Watch.__dict__:
            Watch.seen = os.environ.get("OMP_WAIT_POLICY")
        return None

sys.meta_path.insert(0, Watch())
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print(getattr(Watch, "seen", "torch not imported"), os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize("script", ["train.py", "predict.py", "export.py"])
def test_every_entry_script_sets_the_wait_policy_before_torch_is_imported(script):
    """The policy is read once, when torch loads OpenMP: the scripts set it first thing in main()."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    result = subprocess.run([sys.executable, "-c", WATCH_TORCH, str(ROOT / "launch" / script)], capture_output=True,
                            text=True, check=True, env=clean)
    seen, final = result.stdout.splitlines()[-1].rsplit(" ", 1)
    assert final == "PASSIVE" and seen in ("PASSIVE", "torch not imported")


def test_more_threads_than_the_cores_is_warned_of(monkeypatch):
    """train.cpu_threads=64 on a 2-core machine ran on without a word, each step slower for it."""
    from emodist.runtime import process

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert process.oversubscribed(None) is None  # unset: the cores are shared out
    assert process.oversubscribed(cores) is None
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert process.oversubscribed(cores) == (
        f"train.cpu_threads={cores} in each of 2 process(es) is more threads than the {cores} core(s) they may use: "
        "the threads take turns and the steps run slower; unset it to share the cores out")
