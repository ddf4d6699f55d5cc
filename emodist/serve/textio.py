"""launch/predict.py's input and output: texts from a .txt/.csv/.jsonl file or standard input (empty entries
counted and left out, undecodable bytes and bad rows named by file and line), predictions as JSON lines or
CSV, flushed chunk by chunk.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from emodist.runtime.errors import UsageError, not_text, utf8_text

if TYPE_CHECKING:
    from emodist.serve.inference import Classifier

CHUNK = 2048
"""Texts per chunk: sorted by length and batched within it (`Classifier.probabilities`), written when done."""


@dataclass
class Texts:
    texts: list[str]
    skipped: int
    """Empty (or whitespace-only) entries left out."""
    source: str
    entry: str = "line"
    """What one entry of `source` is: a line, or an argument."""


COLUMNED = (".csv", ".jsonl")
"""The files whose texts are one column (field) of each row: `--column` names it; any other file is one text a line."""


def texts_of(arguments: list[str], path: str | None, column: str | None = None) -> Texts:
    """The texts to label: `arguments` when there are any, else those of `read_texts(path, column)`.
    `column`: the column a .csv/.jsonl file's texts are in (None: `text`). UsageError when there is no text,
    or when `column` is given for texts that have no columns."""
    if column is not None and (arguments or Path(path or "-").suffix.lower() not in COLUMNED):
        if arguments:
            raise UsageError(f"--column {column}: texts given as arguments have no columns: leave --column out (it "
                             "names the text column of a .csv or .jsonl file)")
        source = "standard input" if path in (None, "-") else path
        raise UsageError(f"--column {column}: {source} is read as one text per line: leave --column out, or give a "
                         ".csv or .jsonl file (--column names the text column of one)")
    column = column or "text"
    if arguments:  # an empty argument is skipped as an empty line is: it holds nothing to label
        for number, argument in enumerate(arguments, 1):
            if why := not_text(argument, argument=True):  # Python keeps a byte that is not UTF-8 as a lone surrogate
                raise UsageError(f"text argument {number} holds {why}: set the terminal to UTF-8, or give the texts "
                                 "in a UTF-8 file with --file")
        kept = [a for a in arguments if a.strip()]
        inputs = Texts(kept, len(arguments) - len(kept), "the arguments", "argument")
    else:
        inputs = read_texts(path, column)
    if not inputs.texts:
        skipped = f" (only {inputs.skipped} empty {inputs.entry}(s))" if inputs.skipped else ""
        raise UsageError(f"no text to label in {inputs.source}{skipped}: give texts as arguments, with --file, or "
                         "on standard input")
    return inputs


def read_texts(path: str | None, column: str = "text") -> Texts:
    """The texts of `path`: `.csv` (the `column` column), `.jsonl` (the `column` field of each object), or
    any other file, and standard input for `path=None` or "-", as one text per line (ended by \\n alone).
    Empty entries are left out and counted. UsageError, naming the file and line, for text that is not UTF-8
    (UTF-16, gzip), bad JSON, CSV whose row has more or fewer fields than its header or an unclosed quote, or
    a missing column."""
    source = "<stdin>" if path in (None, "-") else path
    if source == "<stdin>":
        if sys.stdin is None:  # `<&-`: Python has no stream for it
            raise UsageError("standard input is closed: give texts as arguments, with --file, or on standard input")
        raw = sys.stdin.buffer.read()
    else:
        try:
            raw = Path(path).read_bytes()
        except OSError as err:
            raise UsageError(f"{path}: cannot read it ({err.strerror})") from None
    text = _decoded(raw, source)
    suffix = Path(source).suffix.lower()
    if suffix == ".csv":
        values = _csv_column(text, column, source)
    elif suffix == ".jsonl":
        values = _jsonl_field(text, column, source)
    else:
        values = _lines(text, source)
    kept = [v for v in values if v.strip()]
    return Texts(kept, len(values) - len(kept), source)


def _decoded(raw: bytes, source: str) -> str:
    """`raw` as UTF-8 text; UsageError naming `source` and the line otherwise, with the way to convert it."""
    def convert(tool: str) -> str:
        return f"pipe it through {tool}" if source == "<stdin>" else f"{tool} {source}"

    if raw.startswith(b"\x1f\x8b"):
        raise UsageError(f"{source}: gzip-compressed, not text: decompress it first, e.g. {convert('gunzip -c')}")
    sample = raw[:4096]  # UTF-16 without its BOM: a NUL at every other byte of ASCII text
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or max(sample[0::2].count(0), sample[1::2].count(0)) > len(sample) // 4:
        raise UsageError(f"{source}: UTF-16 text, not UTF-8 (UTF-8 decodes it as text full of NUL bytes); convert it "
                         f"first, e.g. {convert('iconv -f utf-16 -t utf-8')}")
    return utf8_text(raw, source, f"convert it first, e.g. {convert('iconv -f latin1 -t utf-8')}")


def _lines(text: str, source: str) -> list[str]:
    """The lines of `text`, ended by \\n (or \\r\\n) alone: str.splitlines also breaks at \\v, \\f, \\x1c-\\x1e,
    \\x85 and U+2028/9, which a text may hold (a line of JSON too). UsageError for a carriage return inside a
    line: a file of old Mac line endings would be read as one text."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if (at := next((number for number, line in enumerate(lines, 1) if "\r" in line), None)) is not None:
        raise UsageError(f"{source}:{at}: {_LONE_CR}")
    return lines


_LONE_CR = "a carriage return (\\r) inside a line (old Mac line endings?): save the file with \\n line endings"


def _csv_column(text: str, column: str, source: str) -> list[str]:
    """The `column` field of each row ("" for a blank row); UsageError naming the line of a row that is not
    valid CSV or has more or fewer fields than the header."""
    csv.field_size_limit(2**31 - 1)  # a long text is a text: csv's default refuses fields over 128 KiB
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    end = 0  # the line the last row read ended on: the next one starts after it

    def row_or_none():
        nonlocal end
        try:
            row = next(rows, None)
        except csv.Error as err:
            raise UsageError(f"{source}:{end + 1}: not valid CSV ({err}): {_CSV_FIX}") from None
        start, end = end + 1, rows.line_num
        return start, row

    _, names = row_or_none()
    if not names or column not in names:
        raise UsageError(f"{source}:1: no column {column!r} (columns: {', '.join(map(repr, names or []))}); "
                         "choose one with --column")
    if names.count(column) > 1:  # one of them would be read, unsaid
        raise UsageError(f"{source}:1: {names.count(column)} columns are named {column!r}: rename all but "
                         "the one to label, or choose another with --column")
    values = []
    while (read := row_or_none())[1] is not None:
        start, row = read
        if not "".join(row).strip():  # a blank line: an empty entry, counted
            values.append("")
        elif len(row) != len(names):
            why = (_CSV_FIX if len(row) > len(names) else "a row short of fields: a line break inside an unquoted text "
                   "ends its row early; quote the text")
            raise UsageError(f"{source}:{start}: {len(names)} columns in the header, {len(row)} field(s) here: {why}")
        else:
            values.append(row[names.index(column)])
    return values


_CSV_FIX = ('quote a text that holds a comma or a quote, doubling its quotes: "she said ""hi"", then left"; or give '
            "one text per line in a .txt file")


def _jsonl_field(text: str, key: str, source: str) -> list[str]:
    values = []
    for number, line in enumerate(_lines(text, source), 1):
        if not line.strip():
            values.append("")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{source}:{number}: not JSON ({err.msg.removesuffix(' at')} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise UsageError(f"{source}:{number}: a JSON {type(record).__name__}, not an object with a text field "
                             f"{key!r}: write one object per line")
        if key not in record:
            raise UsageError(f"{source}:{number}: no text field {key!r} (fields: {', '.join(map(repr, record))}); "
                             "choose one with --column")
        if not isinstance(record[key], str):
            raise UsageError(f"{source}:{number}: field {key!r} holds {record[key]!r}, not a text")
        if why := not_text(record[key]):
            raise UsageError(f"{source}:{number}: field {key!r} holds {why}: write the character itself, or both "
                             "halves of its escape (\\ud83d\\ude00 is one emoji)")
        values.append(record[key])
    return values


def check_format(labels: list[str], fmt: str, top_k: int = 0) -> None:
    """UsageError when `fmt` cannot write these labels' predictions unambiguously: a CSV names its score columns
    after the labels beside its own `text`, `labels` (joined by ";") and `top` ("label:score" joined by ";")."""
    if fmt != "csv":
        return
    own = {"text", "labels", *(["top"] if top_k else [])}
    separators = ";:" if top_k else ";"
    clash = [label for label in labels if label in own or any(mark in label for mark in separators)]
    if clash:
        shown_labels = ", ".join(repr(label) for label in clash[:5]) + (", ..." if len(clash) > 5 else "")
        raise UsageError(f"--format csv: this model's label(s) {shown_labels} would read as the CSV's own columns "
                         f"(text, labels{', top' if top_k else ''}) or its separators ({' '.join(separators)}): "
                         "use --format jsonl")


class Writer:
    """Predictions as JSON lines ({"text", "labels", "scores", "top"}) or CSV (text, labels joined by
    ";", one score column per label, "top"), flushed after every chunk so that what is done stays done."""

    def __init__(self, stream: TextIO, labels: list[str], fmt: str, top_k: int = 0):
        self.stream, self.labels, self.fmt, self.top_k = stream, labels, fmt, top_k
        check_format(labels, fmt, top_k)
        encoding = getattr(stream, "encoding", None) or "utf-8"
        self.ascii = codecs.lookup(encoding).name != "utf-8"
        """JSON escapes what the stream cannot hold (standard output under PYTHONIOENCODING=ascii): valid JSON
        all the same, where the stream's own escapes (`\\xe9`) are not."""
        if self.ascii and fmt == "csv":  # a CSV has no escapes: its texts and labels would change
            raise UsageError(f"--format csv: standard output writes {encoding}, not UTF-8, so texts and labels would "
                             "change in it: name a file with --output (written in UTF-8), or use --format jsonl")
        self.done = 0
        """Texts whose predictions are written whole (and flushed)."""
        if fmt == "csv":
            self.csv = csv.writer(stream)
            self.csv.writerow(["text", "labels", *labels, *(["top"] if top_k else [])])
        self.kept = stream.tell() if stream.seekable() else 0
        """Bytes of the file that hold whole records: what `abandon` cuts it back to."""

    def write(self, texts: list[str], probabilities: np.ndarray, labels: list[list[str]]) -> None:
        for text, row, chosen in zip(texts, probabilities, labels, strict=True):
            scores = {label: round(float(p), 6) for label, p in zip(self.labels, row, strict=True)}
            top = sorted(scores.items(), key=lambda item: -item[1])[:self.top_k]
            if self.fmt == "csv":
                self.csv.writerow([text, ";".join(chosen), *scores.values(),
                                   *([";".join(f"{name}:{p}" for name, p in top)] if self.top_k else [])])
            else:
                record = {"text": text, "labels": chosen, "scores": scores}
                if self.top_k:
                    record["top"] = [{"label": name, "score": p} for name, p in top]
                self.stream.write(json.dumps(record, ensure_ascii=self.ascii) + "\n")
        self.stream.flush()
        self.done += len(texts)
        self.kept = self.stream.tell() if self.stream.seekable() else 0

    def abandon(self, total: int) -> None:
        """After a failure or a stop: an output file is cut back to its whole records, and removed when it holds
        none; what it keeps is said on stderr. Standard output is left as it is."""
        path = Path(getattr(self.stream, "name", ""))
        if self.stream is sys.stdout or not path.is_file():  # a device or a pipe (--output /dev/stdout): as it is
            return
        with contextlib.suppress(OSError):
            self.stream.close()  # on a full disk its unwritten tail fails to flush, and goes
        if not self.done:
            path.unlink(missing_ok=True)
            return
        with contextlib.suppress(OSError):
            os.truncate(path, self.kept)  # a record cut by a full disk or a stop mid-write
        print(f"emodist: {path} keeps the predictions of the first {self.done:,} of {total:,} texts: delete it, or "
              "choose another --output, to run them all again", file=sys.stderr)


def open_output(path: str | None) -> TextIO:
    """Standard output for None, else the new file `path` (an existing file is refused: nothing is overwritten),
    or a device or pipe that exists (/dev/stdout, a named pipe)."""
    if path is None:
        if sys.stdout is None:  # `>&-`: the predictions would go nowhere
            raise UsageError("standard output is closed: name a file for the predictions with --output")
        return sys.stdout
    with contextlib.suppress(OSError, ValueError, AttributeError):  # /dev/stdout is standard output, wherever it goes
        if os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno())):
            return sys.stdout
    try:
        device = Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir()
        return open(path, "w" if device else "x", encoding="utf-8", newline="")  # noqa: SIM115 - open for the whole run
    except FileExistsError:
        raise UsageError(f"--output {path} exists: choose a new file (nothing is overwritten)") from None
    except OSError as err:
        raise UsageError(f"--output {path}: cannot write it ({err.strerror})") from None


def write_predictions(classifier: Classifier, inputs: Texts, writer: Writer) -> None:
    """Label `inputs` CHUNK texts at a time, each chunk written (and flushed) when it is done, so a stop keeps
    what was done; then say on stderr how many empty lines were skipped and how many texts were cut."""
    truncated = 0
    try:
        for start in range(0, len(inputs.texts), CHUNK):
            chunk = inputs.texts[start:start + CHUNK]
            probabilities = classifier.probabilities(chunk)
            writer.write(chunk, probabilities, classifier.labels_of(probabilities))
            truncated += classifier.truncated(chunk)
    except BaseException:
        writer.abandon(len(inputs.texts))
        raise
    if inputs.skipped:
        print(f"emodist: skipped {inputs.skipped} empty {inputs.entry}(s) of {inputs.source}", file=sys.stderr)
    if truncated:
        print(f"emodist: {truncated} text(s) longer than {classifier.max_length} tokens were read up to that length "
              "(--max-length)", file=sys.stderr)
