"""Writing measured results into bench/RESULTS.md: the machine line and replaceable entries.

Each entry sits between `<!-- run:NAME -->` and `<!-- /run:NAME -->`; recording NAME again replaces it, so
the file never holds two versions of one measurement.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"


def machine() -> str:
    """This machine in one line: CPU model, usable cores, memory, GPU (or none), torch version."""
    import torch

    from emodist.report.roofline import cpu_name

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, {memory:.0f} GiB, {gpu}, torch {torch.__version__}"


def entry(title: str, command: str, body: str, *facts: str) -> str:
    """A RESULTS.md entry: its title, the command that measured it, this machine, today's date, any more
    `facts` (one bullet each), then `body`."""
    import time

    bullets = [f"command: `{command}`", f"machine: {machine()}", f"recorded {time.strftime('%Y-%m-%d')}", *facts]
    return f"### {title}\n\n" + "".join(f"- {b}\n" for b in bullets) + f"\n{body}"


def replace_block(text: str, start: str, end: str, block: str, heading: str = "") -> str:
    """`text` with the block between `start` and `end` (markers included) replaced by `block`, or, when
    there is none, `block` appended (after `heading`, when given)."""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip("\n") + "\n\n" + (f"{heading}\n\n" if heading else "") + block + "\n"


def record(name: str, entry: str, heading: str = "") -> None:
    """Put `entry` (its markdown, without markers) into RESULTS.md as the entry called `name`."""
    start, end = f"<!-- run:{name} -->", f"<!-- /run:{name} -->"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(replace_block(text, start, end, f"{start}\n{entry}\n{end}", heading), encoding="utf-8")
