"""The CPU training allocator settings (emodist.hostmem), checked in fresh processes: where glibc puts a
64 MiB block with and without them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emodist import hostmem

PROBE = """
import ctypes, sys
from emodist import hostmem
if sys.argv[1] == "keep":
    assert hostmem.keep_freed_memory()
block = bytearray(64 * 2**20)  # CPython takes blocks this large from malloc
address = ctypes.addressof((ctypes.c_char * len(block)).from_buffer(block))
for line in open("/proc/self/maps"):
    span, *rest = line.split()
    start, end = (int(x, 16) for x in span.split("-"))
    if start <= address < end:
        print(rest[-1] if len(rest) == 5 else "anonymous")
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
