"""The comparison across runs: one row per finished run, read from its `summary.json`.

    runs = report.find_runs([Path("runs/study-42")])      # run directories, or directories of runs
    written = report.write_comparison(runs, Path("runs/study-42/comparison"))

Writes `comparison.csv` (every column, full precision), `report.md` and `report.html` (the table a
reader wants, with the plots of `emodist.plots`: F1 vs throughput, per-label F1, curves, confusion).
Runs that are not comparable (another data set or label set) are refused, never mixed; runs that
did not finish (no `summary.json`) are listed in the report as such. File work only: no torch.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from emodist.report import report_dir
from emodist.rundir.contract import ASIDE
from emodist.runtime.errors import UsageError

SUMMARY = "summary.json"
MARKERS = (SUMMARY, "config.yaml")  # what makes a directory a run directory (finished or not)

# (column, where in summary.json, format for the markdown table); the CSV holds every column unformatted
COLUMNS: list[tuple[str, tuple[str, ...], str]] = [
    ("run", (), "{}"),
    ("variant", ("variant",), "{}"),
    ("base_model", ("base_model",), "{}"),
    ("method", ("method",), "{}"),
    ("quantization", ("quantization",), "{}"),
    ("num_nodes", ("num_nodes",), "{}"),
    ("num_processes", ("num_processes",), "{}"),
    ("distributed", (), "{}"),
    ("mixed_precision", ("mixed_precision",), "{}"),
    ("params_trainable", ("params", "trainable"), "{:,}"),
    ("train_steps", ("train", "steps"), "{}"),
    ("test_examples", ("test", "num_examples"), "{:,}"),
    ("dev_f1_macro", ("dev", "f1_macro"), "{:.4f}"),
    ("dev_f1_micro", ("dev", "f1_micro"), "{:.4f}"),
    ("test_f1_macro", ("test", "f1_macro"), "{:.4f}"),
    ("test_f1_micro", ("test", "f1_micro"), "{:.4f}"),
    ("test_tuned_f1_macro", ("test_tuned", "f1_macro"), "{:.4f}"),
    ("test_tuned_f1_micro", ("test_tuned", "f1_micro"), "{:.4f}"),
    ("test_precision_micro", ("test", "precision_micro"), "{:.4f}"),
    ("test_recall_micro", ("test", "recall_micro"), "{:.4f}"),
    ("test_subset_accuracy", ("test", "subset_accuracy"), "{:.4f}"),
    ("train_seconds", ("perf", "train_seconds"), "{:.1f}"),
    ("sessions", ("perf", "sessions"), "{}"),
    ("train_samples_per_s", ("perf", "train_samples_per_s"), "{:.1f}"),
    ("train_tokens_per_s", ("perf", "train_tokens_per_s"), "{:,.0f}"),
    ("padding_efficiency", ("perf", "padding_efficiency"), "{:.0%}"),
    ("step_seconds_median", ("perf", "step_seconds_median"), "{:.3f}"),
    ("mfu", ("perf", "mfu"), "{:.1%}"),
    ("peak_memory_gib", (), "{:.2f}"),
]
HEADERS = {"run": "run", "variant": "variant", "base_model": "base model", "method": "method",
           "quantization": "quant", "num_nodes": "nodes", "num_processes": "procs", "distributed": "topology",
           "mixed_precision": "precision", "params_trainable": "trainable params", "train_steps": "steps", "test_examples": "test examples",
           "dev_f1_macro": "dev F1 macro", "dev_f1_micro": "dev F1 micro", "test_f1_macro": "test F1 macro",
           "test_f1_micro": "test F1 micro", "test_tuned_f1_macro": "tuned F1 macro",
           "test_tuned_f1_micro": "tuned F1 micro", "test_precision_micro": "test P micro",
           "test_recall_micro": "test R micro", "test_subset_accuracy": "test exact match",
           "train_seconds": "train s", "sessions": "sessions", "train_samples_per_s": "samples/s", "train_tokens_per_s": "tokens/s",
           "padding_efficiency": "real/padded", "step_seconds_median": "step s (median)", "mfu": "MFU",
           "peak_memory_gib": "peak mem GiB"}


@dataclass
class Runs:
    finished: list[Path] = field(default_factory=list)
    unfinished: list[Path] = field(default_factory=list)


def find_runs(paths: list[Path]) -> Runs:
    """The run directories named, or found one level inside a named directory (a study's runs; not those that
    --overwrite moved aside, superseded: name one to compare it). An earlier comparison's report directory among
    several paths (`compare.py study/*`) is passed over."""
    runs = Runs()
    for path in paths:
        if not path.is_dir():
            if path.is_file():
                raise UsageError(f"{path}: a file, not a run directory: name the directory that holds it, {path.parent}")
            raise UsageError(f"{path}: no such directory: name run directories (runs/<run>) or a directory of runs")
        if len(paths) > 1 and (path / report_dir.OWN).is_file():
            continue
        found = [path] if _is_run(path) else sorted(p for p in path.iterdir() if p.is_dir() and _is_run(p))
        candidates = [run for run in found if run == path or ASIDE not in run.name]
        if found and not candidates:
            raise UsageError(f"{path}: holds only runs that --overwrite moved aside ({', '.join(r.name for r in found[:3])}"
                             f"{' ...' if len(found) > 3 else ''}): name one of them to compare it")
        if not candidates:
            raise UsageError(f"{path}: neither a run directory nor a directory of runs (no {SUMMARY} or config.yaml "
                             "in it or one level below)")
        for run in candidates:
            target = runs.finished if (run / SUMMARY).is_file() else runs.unfinished
            if run.resolve() not in {r.resolve() for r in target}:  # a run named twice (a link, a study) counts once
                target.append(run)
    if not runs.finished:
        raise UsageError("no finished run to compare (a finished run has summary.json): "
                         + ", ".join(str(r) for r in runs.unfinished))
    return runs


def _is_run(path: Path) -> bool:
    return any((path / marker).is_file() for marker in MARKERS)


def load_summaries(runs: list[Path]) -> list[dict]:
    """Each run's summary.json, checked (`checked_summary`); UsageError naming the file otherwise."""
    summaries = []
    for run in runs:
        try:
            summary = json.loads((run / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UsageError(f"{run / SUMMARY}: unreadable ({err}): rerun or remove that run") from None
        summaries.append(checked_summary(run / SUMMARY, summary))
    return summaries


SCORED = ("dev", "test", "test_tuned")
SECTIONS = (*SCORED, "perf", "params", "train")


def checked_summary(where: Path, summary) -> dict:
    """`summary` with its optional sections made objects (a missing or null `perf` becomes {}), after checking
    that every value the comparison reads has its type; UsageError naming `where` and the key otherwise."""
    def refuse(problem: str) -> UsageError:
        return UsageError(f"{where}: {problem}: not a summary emodist wrote (or edited since): rerun or remove that run")

    if not isinstance(summary, dict):
        raise refuse(f"a JSON {type(summary).__name__}, not an object")
    summary = dict(summary)
    for key in ("variant", "dataset"):
        if not isinstance(summary.get(key), str):
            raise refuse(f"{key} is missing or not text")
    labels = summary.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels)):
        raise refuse("labels is missing or not a list of names")
    for section in SECTIONS:
        if summary.get(section) is None:
            summary[section] = {}
        elif not isinstance(summary[section], dict):
            raise refuse(f"{section} is a {type(summary[section]).__name__}, not an object")
    if not summary["test"]:
        raise refuse("it holds no test scores")
    for section in SCORED:
        scores = summary[section]
        for key, value in scores.items():
            if key in ("per_label", "confusion"):
                if not (isinstance(value, dict) and all(isinstance(v, (dict, list)) for v in value.values())):
                    raise refuse(f"{section}.{key} is not an object of labels")
            elif value is not None and not _is_number(value):
                raise refuse(f"{section}.{key} is {value!r}, not a number")
        for label, per in scores.get("per_label", {}).items():
            if not isinstance(per, dict) or not all(_is_number(v) for v in per.values()):
                raise refuse(f"{section}.per_label.{label} is not an object of numbers")
        for label, matrix in scores.get("confusion", {}).items():
            if not (isinstance(matrix, list) and len(matrix) == 2 and all(
                    isinstance(row, list) and len(row) == 2 and all(_is_number(v) for v in row) for row in matrix)):
                raise refuse(f"{section}.confusion.{label} is not a 2x2 matrix")
    for section in ("perf", "params", "train"):  # the values the table and the plots read
        read = {path[1] for _, path, _ in COLUMNS if len(path) == 2 and path[0] == section} | {"peak_memory_bytes"}
        for key in read & set(summary[section]):
            value = summary[section][key]
            if value is not None and not _is_number(value):
                raise refuse(f"{section}.{key} is {value!r}, not a number")
    return summary


def check_comparable(runs: list[Path], summaries: list[dict]) -> None:
    """Refuse runs scored on different test sets or label sets: their scores do not compare. Test sets compare
    by their fingerprint (examples and labels: one data set in two folders is one), or, for runs that did not
    record one, by their data set's name and their size."""
    fingerprints = [(s.get("splits") or {}).get("test", {}).get("fingerprint") for s in summaries]
    sizes = [f"{s['test'].get('num_examples')} examples" for s in summaries]
    checks = [("labels", [s["labels"] for s in summaries])]
    if all(fingerprints):
        checks.append(("test set", [f"{size}, {f[:8]}" for size, f in zip(sizes, fingerprints, strict=True)]))
    else:
        checks = [("dataset", [s["dataset"] for s in summaries]), *checks, ("test set size", sizes)]
    for key, values in checks:
        groups: dict[str, list[str]] = {}
        for name, value in zip(display_names(runs), values, strict=True):
            groups.setdefault(json.dumps(value), []).append(name)
        if len(groups) > 1:
            kinds = "; ".join(f"{', '.join(names)}: {_short(json.loads(value))}" for value, names in groups.items())
            raise UsageError(f"these runs differ in their {key}, so their scores do not compare ({kinds}): "
                             "compare runs scored on one data set, label set and test set at a time")


def _short(value) -> str:
    if isinstance(value, list):
        return f"{len(value)} labels ({', '.join(map(str, value[:3]))}{', ...' if len(value) > 3 else ''})"
    return str(value)


def display_names(runs: list[Path]) -> list[str]:
    """A name per run for the table and the plots: its directory's name, with as many of its parents as set it
    apart where others share it (/x/runs/a and /y/runs/a: x/runs/a and y/runs/a)."""
    parts = [run.absolute().parts for run in runs]
    names = [run.name for run in runs]
    for depth in range(2, max(map(len, parts)) + 1):
        shared = {name for name in names if names.count(name) > 1}
        if not shared:
            break
        names = ["/".join(p[-depth:]) if name in shared else name for p, name in zip(parts, names, strict=True)]
    return names


def row(run: Path, summary: dict, label: str | None = None) -> dict:
    """The table's values of one run; `label`: its name in the table (default: its directory's)."""
    values = {}
    for name, path, _ in COLUMNS:
        value = summary
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        values[name] = value if path else None
    values["run"] = label or run.name
    values["distributed"] = str(summary.get("distributed_type") or "") + (
        f" ZeRO-{summary['zero_stage']}" if summary.get("zero_stage") is not None else "")
    peak = summary["perf"].get("peak_memory_bytes")
    values["peak_memory_gib"] = peak / 2**30 if _is_number(peak) else None
    return values


LOWER_IS_BETTER = ("loss", "hamming_loss")


def rank(runs: list[Path], metric: str) -> list[tuple[Path, float]]:
    """The finished `runs` best first by `metric`, a dev score of summary.json (`dev.f1_macro`,
    `dev_tuned.f1_macro`, ...; losses ascending): model selection reads dev only. UsageError, in one line,
    for a test metric or a run without the metric."""
    split, _, key = metric.partition(".")
    if split not in ("dev", "dev_tuned") or not key:
        why = ("choosing a model by its test score leaves no unbiased test score to report" if split.startswith("test")
               else "name the split and the score")
        raise UsageError(f"--rank-by {metric}: rank on a dev score (dev.KEY or dev_tuned.KEY, e.g. dev_tuned.f1_macro): "
                         f"{why}")
    scored, summaries = [], load_summaries(runs)
    known = sorted({name for summary in summaries for name, value in (summary.get(split) or {}).items()
                    if _is_number(value) and name != "num_examples"})
    if known and key not in known:  # a typo, not an old run
        what = "is the split's size, no score" if key == "num_examples" else "is reported by no run"
        raise UsageError(f"--rank-by {metric}: {split}.{key} {what}: {split} holds {', '.join(known)}")
    for run, summary in zip(runs, summaries, strict=True):
        value = (summary.get(split) or {}).get(key)
        if not _is_number(value):
            has = [f"{part}.{name}" for part in ("dev", "dev_tuned") for name, number in (summary.get(part) or {}).items()
                   if _is_number(number) and name != "num_examples"]
            raise UsageError(f"{run / SUMMARY} has no number at {metric} (a run written before emodist reported it?): "
                             f"rank by a dev score it has{f', e.g. {has[0]}' if has else ''}, or compare without it")
        scored.append((run, float(value)))
    return sorted(scored, key=lambda item: item[1] if key in LOWER_IS_BETTER else -item[1])


def write_comparison(runs: Runs, output: Path) -> list[Path]:
    """Write comparison.csv, report.md, report.html and the PNG plots into `output`; return the files."""
    from emodist.report import plots  # matplotlib: imported only when drawing

    summaries = load_summaries(runs.finished)
    check_comparable(runs.finished, summaries)
    names = display_names(runs.finished)
    rows = sorted((row(r, s, n) for r, s, n in zip(runs.finished, summaries, names, strict=True)),
                  key=lambda r: -(r["test_f1_macro"] if _is_number(r["test_f1_macro"]) else -math.inf))
    output.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, html_path = output / "comparison.csv", output / "report.md", output / "report.html"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[name for name, _, _ in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    images = plots.comparison(runs.finished, summaries, output, names)
    md_path.write_text(markdown(rows, summaries[0], runs.unfinished, images), encoding="utf-8")
    html_path.write_text(html(rows, summaries[0], runs.unfinished, images), encoding="utf-8")
    return [csv_path, md_path, html_path, *images]


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value, fmt: str) -> str:
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _intro(rows: list[dict], first: dict) -> str:
    labels = first.get("labels") or []
    return (f"{len(rows)} run{'s' if len(rows) != 1 else ''} on {first.get('dataset')} ({len(labels)} labels), "
            "best test F1 macro first. Test scores at threshold 0.5; 'tuned' ones at per-label thresholds tuned "
            "on dev. Throughput counts real (unpadded) tokens; peak memory is the largest of the ranks (GPU "
            "allocated, or CPU resident set).")


def markdown(rows: list[dict], first: dict, unfinished: list[Path], images: list[Path] | None = None) -> str:
    lines = ["# emodist comparison", "", _intro(rows, first), ""]
    names = [name for name, _, _ in COLUMNS]
    lines.append("| " + " | ".join(HEADERS[n] for n in names) + " |")
    lines.append("|" + "|".join("---:" if n not in ("run", "variant", "base_model", "method", "quantization",
                                                   "distributed", "mixed_precision") else "---"
                                for n in names) + "|")
    formats = {name: fmt for name, _, fmt in COLUMNS}
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[n], formats[n]) for n in names) + " |")
    if unfinished:
        lines += ["", "Not finished (no summary.json; failed, stopped or still running): "
                  + ", ".join(f"`{p.name}`" for p in unfinished) + "."]
    lines += [line for image in images or [] for line in ("", f"![{image.stem}]({image.name})")]
    return "\n".join(lines) + "\n"


def html(rows: list[dict], first: dict, unfinished: list[Path], images: list[Path]) -> str:
    """The same report as one HTML page (images beside it)."""
    from html import escape

    names = [name for name, _, _ in COLUMNS]
    formats = {name: fmt for name, _, fmt in COLUMNS}
    head = "".join(f"<th>{escape(HEADERS[n])}</th>" for n in names)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(r[n], formats[n]))}</td>" for n in names) + "</tr>\n"
                   for r in rows)
    parts = ["<!doctype html>", '<html><head><meta charset="utf-8"><title>emodist comparison</title>',
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}img{max-width:100%;margin:1em 0}"
             "</style></head><body>",
             "<h1>emodist comparison</h1>", f"<p>{escape(_intro(rows, first))}</p>",
             f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"]
    if unfinished:
        parts.append("<p>Not finished (no summary.json; failed, stopped or still running): "
                     + ", ".join(f"<code>{escape(p.name)}</code>" for p in unfinished) + ".</p>")
    parts += [f'<figure><img src="{escape(i.name)}" alt="{escape(i.stem)}"></figure>' for i in images]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
