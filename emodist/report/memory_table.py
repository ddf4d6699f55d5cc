"""The memory plan in the terminal: one row per part of a process's memory, the verdict, the advice.

    memory_table.show(planned, target, advice)      # launch/plan.py
"""

from __future__ import annotations

from rich.console import Console as RichConsole
from rich.table import Table

from emodist.models import memory
from emodist.models.memory import MemoryPlan
from emodist.models.placement import Target
from emodist.report.console import terminal
from emodist.runtime.errors import format_bytes


def show(planned: MemoryPlan, target: Target, advice: list[dict], console: RichConsole | None = None) -> None:
    console = console or terminal(then="the plan is not printed")
    p = planned.placement
    table = Table(title=f"Memory plan per process · {planned.model} · {p.describe()}", title_justify="left")
    table.add_column("part")
    table.add_column("size", justify="right")
    table.add_column("where")
    table.add_column("what")
    for row in planned.rows:
        table.add_row(row.name, format_bytes(row.bytes), "host" if row.on_host else p.device, row.note)
    table.add_row("[b]peak[/b]", f"[b]{format_bytes(planned.peak_bytes)}[/b]", p.device,
                  f"{planned.params_trainable:,} trainable of {planned.params_total:,} parameters")
    console.print(table)
    if planned.host_bytes:
        console.print(f"offloaded to the host: {format_bytes(planned.host_bytes)} per process")
    console.print(memory.verdict(planned, target))
    if advice:
        console.print("what to change (each alone):")
        for option in advice:
            console.print(f"  {option['change']}: {format_bytes(option['peak_bytes'])} per process"
                          + (" · fits" if option["fits"] else " · still too much"))
