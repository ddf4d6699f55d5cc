"""The memory plan in the terminal: one row per part of a process's memory, the verdict, the advice.

    memory_table.show(planned, target, advice)      # launch/plan.py
"""

from __future__ import annotations

from rich.console import Console as RichConsole
from rich.table import Table

from emodist.models.memory import MemoryPlan
from emodist.models.placement import Target


def size(count: int) -> str:
    return f"{count / 2**30:,.2f} GiB" if count >= 2**28 else f"{count / 2**20:,.1f} MiB"


def verdict(planned: MemoryPlan, target: Target) -> str:
    """One line: fits or not, by how much, on what."""
    room = target.room(planned.placement)
    shared = f" ({target.capacity / 2**30:,.1f} GiB shared by {planned.placement.per_node} processes)" if (
        target.device == "cpu" and planned.placement.per_node > 1) else ""
    where = f"{size(room)} of {target.source}{shared}"
    if target.fits(planned):
        return f"fits: {size(planned.peak_bytes)} per process of {where} ({size(room - planned.peak_bytes)} to spare)"
    return f"does not fit: {size(planned.peak_bytes)} per process, {size(planned.peak_bytes - room)} more than {where}"


def show(planned: MemoryPlan, target: Target, advice: list[dict], console: RichConsole | None = None) -> None:
    console = console or RichConsole(highlight=False)
    p = planned.placement
    table = Table(title=f"Memory plan per process · {planned.model} · {p.describe()}", title_justify="left")
    table.add_column("part")
    table.add_column("size", justify="right")
    table.add_column("where")
    table.add_column("what")
    for row in planned.rows:
        table.add_row(row.name, size(row.bytes), "host" if row.on_host else p.device, row.note)
    table.add_row("[b]peak[/b]", f"[b]{size(planned.peak_bytes)}[/b]", p.device,
                  f"{planned.params_trainable:,} trainable of {planned.params_total:,} parameters")
    console.print(table)
    if planned.host_bytes:
        console.print(f"offloaded to the host: {size(planned.host_bytes)} per process")
    console.print(verdict(planned, target))
    if advice:
        console.print("what to change (each alone):")
        for option in advice:
            console.print(f"  {option['change']}: {size(option['peak_bytes'])} per process"
                          + (" · fits" if option["fits"] else " · still too much"))
