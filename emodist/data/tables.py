"""The user's own tables: {train,dev,test}.csv or .jsonl, a text column and a label column of names (a JSON
list, or names separated by , ; or | in a CSV cell), and an optional labels.txt fixing the label set and
its order; each bad row refused naming its file and line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from emodist.config import DataConfig
from emodist.data.rows import collect, label_file, read_lines, row_error
from emodist.data.sets import SPLITS, EmotionData
from emodist.runtime.errors import DataError, not_text, shown

_SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "val"), "test": ("test",)}


def load_table_dir(directory: Path, cfg: DataConfig, fmt: str) -> EmotionData:
    """The splits of a directory of {train,dev,test}.`fmt` files (csv or jsonl) and its optional labels.txt."""
    files = {split: _find_split_file(directory, split, fmt) for split in SPLITS}
    columns = (cfg.text_column, cfg.label_column)
    records = {split: list(_table_rows(path, _csv_records(path, columns) if fmt == "csv" else _jsonl_records(path), cfg))
               for split, path in files.items()}
    for split, path in files.items():
        if not records[split]:  # a header alone, or nothing: said as the labels' absence before
            raise DataError(f"{path}: no examples (the split is empty)")
    labels_file = directory / "labels.txt"
    if labels_file.exists():
        labels = label_file(labels_file)
    else:
        labels = sorted({name for _, _, names in records["train"] for name in names})
    if not labels:
        raise DataError(f"{files['train']}: no labels in column {cfg.label_column!r}")
    index = {name: i for i, name in enumerate(labels)}
    source = f"{labels_file}" if labels_file.exists() else f"the labels of {files['train'].name}"
    splits = {}
    for split, path in files.items():
        rows = []
        for lineno, text, names in records[split]:
            unknown = [n for n in names if n not in index]
            if unknown:
                raise row_error(path, lineno, f"unknown label {unknown[0]!r}: not in {source}")
            rows.append((lineno, text, [index[n] for n in names]))
        splits[split] = collect(path, iter(rows), len(labels), allow_no_label=True)
    return EmotionData(directory.name or fmt, labels, splits)


def _find_split_file(directory: Path, split: str, fmt: str) -> Path:
    found = [directory / f"{name}.{fmt}" for name in _SPLIT_NAMES[split] if (directory / f"{name}.{fmt}").exists()]
    if len(found) != 1:  # none, or dev.csv beside validation.csv: one of them would be read without a word
        raise DataError(f"{directory}: {' and '.join(p.name for p in found)} are both a {split} split: keep one"
                        if found else f"{directory}: missing {' or '.join(f'{n}.{fmt}' for n in _SPLIT_NAMES[split])}")
    return found[0]


def _csv_records(path: Path, columns: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """(line the row starts on, {column: value}) of each row; DataError for a bad row (an unclosed quote
    included: read leniently, it swallowed the rest of the split into one field), or a header naming one of
    `columns` twice."""
    csv.field_size_limit(2**31 - 1)  # a long text is a text: csv's default refuses fields over 128 KiB
    read, start = 0, None  # lines handed to the reader (its line_num lags on an error); the row's first line

    def lines() -> Iterator[str]:
        nonlocal read, start
        for read, line in enumerate(read_lines(path), 1):  # noqa: B007 (read is the count the error names)
            if start is None and line.strip():
                start = read
            yield line

    def spans() -> str:
        return f" (the row runs from line {start} to {read}: is a quote (\") there left open?)" if read > start else ""

    reader = csv.DictReader(lines(), strict=True)
    try:
        _check_header(path, reader.fieldnames or [], columns)
        start = None
        for row in reader:
            start = read if start is None else start  # a line of spaces alone is a row too
            if None in row:  # DictReader's place for the fields beyond the header's
                width = len(reader.fieldnames)
                raise row_error(path, start, f"{width} columns in the header, {width + len(row[None])} fields "
                                f'here{spans()}: quote a text that holds a comma, e.g. "I love it, really"')
            missing = [name for name in columns if row.get(name, "") is None]  # a row shorter than the header
            if missing:
                raise row_error(path, start, f"no value in column {missing[0]!r}: the row has fewer fields than the "
                                f"header{spans()}")
            yield start, row
            start = None
    except csv.Error as err:  # csv's advice for a lone \r, "open the file in universal-newline mode", is not the user's
        if "new-line character" in str(err):
            raise row_error(path, read, "a carriage return (\\r) outside quotes (old Mac line endings?): save the "
                            "file with \\n line endings") from None
        raise row_error(path, start or read, f"not valid CSV ({err}){spans() if start else ''}: {QUOTES}") from None


QUOTES = ('only a comma or the end of the line may follow a closing quote, and a quote inside a quoted text is '
          'written twice, e.g. "she said ""hi"""')


def _check_header(path: Path, names: list[str], columns: tuple[str, ...]) -> None:
    """DataError for a header that is missing, one field holding tabs or semicolons (a file separated by them,
    read as one column), names one of `columns` twice (DictReader keeps the last one's values, unsaid) or lacks
    one (named on line 1 with the columns there are, not on the first row)."""
    if not names:
        raise row_error(path, 1, "no header: a .csv split's first line names its columns (e.g. text,labels)")
    if len(names) == 1 and ("\t" in names[0] or ";" in names[0]):
        raise row_error(path, 1, f"the header is one column, {names[0]!r}: its fields are separated by "
                                  f"{'tabs' if chr(9) in names[0] else 'semicolons'}, and a .csv file's by commas: "
                                  "save it comma-separated")
    twice = [name for name in columns if names.count(name) > 1]
    if twice:
        raise row_error(path, 1, f"the header names {', '.join(map(repr, twice))} more than once: rename all but "
                                  "one, or remove the extra columns")
    missing = [name for name in columns if name not in names]
    if missing:
        near = [n for n in names if n.strip().lower() == missing[0].lower()]
        raise row_error(path, 1, f"no column {missing[0]!r} in the header (its columns: {shown(names)})"
                        + (f": did you mean {near[0]!r}? " if near else ": ")
                        + "name the columns in the first line, or set data.text_column / data.label_column")


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_pairs)
        except json.JSONDecodeError as err:
            raise row_error(path, lineno, f"invalid JSON: {err.msg}") from None
        if not isinstance(row, dict):
            raise row_error(path, lineno, "each line must be a JSON object")
        if twice := row.pop(_TWICE, None):  # json keeps the last value, unsaid; a CSV header naming it twice is refused
            raise row_error(path, lineno, f"the key {twice!r} is given twice: keep one")
        yield lineno, row


_TWICE = "\0twice"


def _pairs(pairs: list[tuple]) -> dict:
    """json's object_pairs_hook: the object, marked with the first key it names twice (`_TWICE`)."""
    keys = [key for key, _ in pairs]
    twice = next((key for key in keys if keys.count(key) > 1), None)
    return {**dict(pairs), **({_TWICE: twice} if twice is not None else {})}


def _table_rows(path: Path, records: Iterator[tuple[int, dict]], cfg: DataConfig):
    for lineno, row in records:
        for column in (cfg.text_column, cfg.label_column):
            if column not in row:
                raise row_error(path, lineno, f"no column {column!r} (set data.text_column / data.label_column)")
            if row[column] is None:  # csv: a row shorter than the header; jsonl: null
                raise row_error(path, lineno, f"no value in column {column!r}: " + (
                    "it is null" if path.suffix == ".jsonl" else "the row has fewer fields than the header"))
        text = row[cfg.text_column]
        if not isinstance(text, str):
            raise row_error(path, lineno, f"the text column {cfg.text_column!r} holds {text!r}, not a string: "
                                           "quote it as text")
        names = label_names(row[cfg.label_column], path, lineno)
        for what, value in ((f"the text column {cfg.text_column!r}", text), *(("a label name", n) for n in names)):
            if why := not_text(value):  # a JSON escape of half a pair: the fingerprint's UTF-8 failed deep inside
                raise row_error(path, lineno, f"{what} holds {why}: write the character itself, or both halves of "
                                "its escape (\\ud83d\\ude00 is one emoji)")
        yield lineno, text, names


def label_names(value, path: Path, lineno: int) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise row_error(path, lineno, f"label list {text!r} is not valid JSON") from None
        else:
            text = text.replace(";", ",").replace("|", ",")
            return [name.strip() for name in text.split(",") if name.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise row_error(path, lineno, f"labels must be a list of label names, got {value!r}")
