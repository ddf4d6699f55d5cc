"""Reading a data file row by row: UTF-8 lines that name the line a bad byte is on, the one-line error for a
bad row (`file:line: what`), the label-name file, and the rows collected into a `Split`; every reader's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from emodist.data.sets import Split, _from_ids
from emodist.runtime.errors import DataError


def label_file(path: Path) -> list[str]:
    """The label names of `path`, one per line; DataError for a file without names, a name listed twice, or a
    blank line between names (label ids index the lines)."""
    names: list[tuple[int, str]] = [(lineno, line.strip()) for lineno, line in enumerate(read_lines(path), 1)]
    while names and not names[-1][1]:
        names.pop()  # blank lines at the end
    if not names:
        raise DataError(f"{path}: no label names (one per line)")
    first: dict[str, int] = {}
    for lineno, name in names:
        if not name:
            raise row_error(path, lineno, "blank line between label names: a label's id is its line, so remove it")
        if name in first:
            raise row_error(path, lineno, f"label {name!r} is listed a second time (first at line {first[name]}): "
                                           "each label once")
        first[name] = lineno
    return [name for _, name in names]


def collect(path: Path, rows: Iterator[tuple[int, str, list[int]]], num_labels: int,
             allow_no_label: bool = False) -> Split:
    """Turn (line, text, label ids) rows into a Split, refusing empty texts, label-less rows and empty files."""
    texts, ids = [], []
    for lineno, text, label_ids in rows:
        if not text.strip():
            raise row_error(path, lineno, "empty text")
        if not label_ids and not allow_no_label:
            raise row_error(path, lineno, "no label")
        texts.append(text)
        ids.append(label_ids)
    if not texts:
        raise DataError(f"{path}: no examples (the split is empty)")
    return _from_ids(texts, ids, num_labels)


def read_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file (a leading BOM dropped); DataError for a missing file or a bad line."""
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    with path.open("rb") as handle:  # decoded line by line, so an error names its line
        for lineno, raw in enumerate(handle, 1):
            if lineno == 1 and (raw.startswith((b"\xff\xfe", b"\xfe\xff")) or raw.count(0) > len(raw) // 4):
                raise row_error(path, 1, f"UTF-16 text, not UTF-8 (a NUL at every other byte): convert it first, e.g. "
                                         f"iconv -f utf-16 -t utf-8 {path}")
            try:
                yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise row_error(path, lineno, f"not UTF-8 ({err.reason}): save the file as UTF-8") from None


def row_error(path: Path, lineno: int, message: str) -> DataError:
    return DataError(f"{path}:{lineno}: {message}")
