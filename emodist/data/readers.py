"""The readers of every data source (data.dataset): GoEmotions and SemEval 2018 E-c in their original
layouts or from the hub, CSV and JSON lines, the synthetic set; each bad row refused naming its file and line.

    data = load(cfg.data, seed=cfg.train.seed)     # -> EmotionData (labels + 3 splits)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from emodist.config import DataConfig
from emodist.data.grouping import group
from emodist.data.sets import SPLITS, EmotionData, Split, _from_ids
from emodist.data.synthetic import synthetic
from emodist.runtime import hub
from emodist.runtime.errors import DataError, UsageError


def load(cfg: DataConfig, seed: int) -> EmotionData:
    """Load the configured data set, check it and apply the example caps. Raises DataError for a file that
    cannot be read as its data set, UsageError otherwise."""
    name = detect(Path(cfg.data_dir)) if cfg.dataset == "auto" else cfg.dataset
    if name == "synthetic":
        data = synthetic(seed)
    elif cfg.data_dir is None:
        data = _HUB_LOADERS[name]()
    else:
        _check_layout(Path(cfg.data_dir), name)
        data = _DIR_LOADERS[name](Path(cfg.data_dir), cfg)
    if cfg.grouping != "none":
        data = group(data, cfg.grouping, Path(cfg.data_dir) if cfg.data_dir else None)
    caps = {"train": cfg.max_train_examples, "dev": cfg.max_eval_examples, "test": cfg.max_eval_examples}
    data.splits = {s: data.splits[s].subset(caps[s], seed) for s in SPLITS}
    return data


def detect(directory: Path) -> str:
    """The format of the files in `directory`; DataError listing what was looked for otherwise."""
    if (directory / "train.tsv").exists() and (directory / "emotions.txt").exists():
        return "goemotions"
    if (directory / _SEMEVAL_FILES["train"]).exists():
        return "semeval2018"
    tables = [fmt for fmt in ("jsonl", "csv") if (directory / f"train.{fmt}").exists()]
    if len(tables) > 1:  # which one the user means is theirs to say
        raise DataError(f"data directory {directory}: holds both train.jsonl and train.csv: set data.dataset=jsonl or "
                        "data.dataset=csv, or keep one data set in the directory")
    if tables:
        return tables[0]
    raise DataError(f"data directory {directory}: no known data layout: expected GoEmotions (train.tsv + emotions.txt), "
                    f"SemEval-2018 E-c ({_SEMEVAL_FILES['train']}) or train.csv / train.jsonl")


def _check_layout(directory: Path, name: str) -> None:
    """DataError when `directory` lacks data.dataset=`name`'s layout and holds another (e.g. data.data_dir set
    without --data-dir, which keeps the default goemotions), naming it."""
    own = {"goemotions": ("train.tsv", "emotions.txt"), "semeval2018": (_SEMEVAL_FILES["train"],)}.get(name, (f"train.{name}",))
    if all((directory / file).exists() for file in own):
        return  # the named layout is there (whatever else the directory holds)
    try:
        there = detect(directory)
    except DataError:
        return  # no known layout at all: the loader names the file it misses
    if there != name:
        raise DataError(f"data.dataset={name}, but {directory} holds the {there} layout: set data.dataset={there} "
                        "(or auto), or pass it as --data-dir, which detects the layout")


def _load_goemotions_dir(directory: Path, cfg: DataConfig) -> EmotionData:
    labels = _label_file(directory / "emotions.txt")
    splits = {}
    for split in SPLITS:
        path = directory / f"{split}.tsv"
        splits[split] = _collect(path, _goemotions_rows(path, len(labels)), len(labels))
    return EmotionData("goemotions", labels, splits)


def _goemotions_rows(path: Path, num_labels: int) -> Iterator[tuple[int, str, list[int]]]:
    for lineno, line in enumerate(_read_lines(path), 1):
        if not line.strip():  # a blank line (often a file's last), skipped as in .jsonl
            continue
        columns = line.rstrip("\r\n").split("\t")
        if len(columns) not in (2, 3):
            raise _row_error(path, lineno, f"expected 3 tab-separated columns (text, label ids, id), got {len(columns)}")
        text, ids = columns[0], columns[1]
        if not ids.strip():
            raise _row_error(path, lineno, "no label ids in the second column: every GoEmotions example has at least "
                                           "one (e.g. 27 for neutral)")
        label_ids = []
        for token in ids.split(","):
            token = token.strip()
            if not (token.isascii() and token.isdigit()):
                raise _row_error(path, lineno, f"label id {token!r} is not a label id: ids are whole numbers "
                                               f"0-{num_labels - 1}, comma-separated (the lines of emotions.txt)")
            label_id = int(token)
            if label_id >= num_labels:
                raise _row_error(path, lineno, f"label id {label_id} is out of range: emotions.txt names "
                                               f"{num_labels} labels (ids 0-{num_labels - 1})")
            label_ids.append(label_id)
        yield lineno, text, label_ids


def _load_goemotions_hub() -> EmotionData:
    ds = _hub_dataset("google-research-datasets/go_emotions", "simplified")
    labels = ds["train"].features["labels"].feature.names
    splits = {
        split: _from_ids(ds[hub_split]["text"], ds[hub_split]["labels"], len(labels))
        for split, hub_split in (("train", "train"), ("dev", "validation"), ("test", "test"))
    }
    return EmotionData("goemotions", labels, splits)


_SEMEVAL_FILES = {"train": "2018-E-c-En-train.txt", "dev": "2018-E-c-En-dev.txt", "test": "2018-E-c-En-test-gold.txt"}
_SEMEVAL_LABELS = ["anger", "anticipation", "disgust", "fear", "joy", "love", "optimism", "pessimism",
                   "sadness", "surprise", "trust"]


def _load_semeval_dir(directory: Path, cfg: DataConfig) -> EmotionData:
    splits = {}
    for split in SPLITS:
        path = directory / _SEMEVAL_FILES[split]
        splits[split] = _collect(path, _semeval_rows(path), len(_SEMEVAL_LABELS), allow_no_label=True)
    return EmotionData("semeval2018", list(_SEMEVAL_LABELS), splits)


def _semeval_rows(path: Path) -> Iterator[tuple[int, str, list[int]]]:
    lines = _read_lines(path)
    header = next(lines, "").rstrip("\r\n").split("\t")
    if header[2:] != _SEMEVAL_LABELS:
        raise _row_error(path, 1, f"expected the header ID, Tweet, {', '.join(_SEMEVAL_LABELS)}")
    for lineno, line in enumerate(lines, 2):
        columns = line.rstrip("\r\n").split("\t")
        if len(columns) != len(header):
            raise _row_error(path, lineno, f"expected {len(header)} tab-separated columns, got {len(columns)}")
        flags = columns[2:]
        if any(flag not in ("0", "1") for flag in flags):
            raise _row_error(path, lineno, "emotion columns must be 0 or 1 (the unlabeled test file has NONE: "
                                           "use the gold file)")
        yield lineno, columns[1], [i for i, flag in enumerate(flags) if flag == "1"]


def _load_semeval_hub() -> EmotionData:
    ds = _hub_dataset("SemEvalWorkshop/sem_eval_2018_task_1", "subtask5.english")
    splits = {}
    for split, hub_split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        rows = ds[hub_split]
        ids = [[i for i, name in enumerate(_SEMEVAL_LABELS) if row[name]] for row in rows]
        splits[split] = _from_ids(rows["Tweet"], ids, len(_SEMEVAL_LABELS))
    return EmotionData("semeval2018", list(_SEMEVAL_LABELS), splits)


_SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "val"), "test": ("test",)}


def _load_table_dir(directory: Path, cfg: DataConfig) -> EmotionData:
    fmt = cfg.dataset if cfg.dataset in ("csv", "jsonl") else detect(directory)
    files = {split: _find_split_file(directory, split, fmt) for split in SPLITS}
    columns = (cfg.text_column, cfg.label_column)
    records = {split: list(_table_rows(path, _csv_records(path, columns) if fmt == "csv" else _jsonl_records(path), cfg))
               for split, path in files.items()}
    labels_file = directory / "labels.txt"
    if labels_file.exists():
        labels = _label_file(labels_file)
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
                raise _row_error(path, lineno, f"unknown label {unknown[0]!r}: not in {source}")
            rows.append((lineno, text, [index[n] for n in names]))
        splits[split] = _collect(path, iter(rows), len(labels), allow_no_label=True)
    return EmotionData(directory.name or fmt, labels, splits)


def _find_split_file(directory: Path, split: str, fmt: str) -> Path:
    found = [directory / f"{name}.{fmt}" for name in _SPLIT_NAMES[split] if (directory / f"{name}.{fmt}").exists()]
    if len(found) != 1:  # none, or dev.csv beside validation.csv: one of them would be read without a word
        raise DataError(f"{directory}: {' and '.join(p.name for p in found)} are both a {split} split: keep one"
                        if found else f"{directory}: missing {' or '.join(f'{n}.{fmt}' for n in _SPLIT_NAMES[split])}")
    return found[0]


def _csv_records(path: Path, columns: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """(line, {column: value}) of each row; DataError for a bad row, or a header naming one of `columns` twice."""
    csv.field_size_limit(2**31 - 1)  # a long text is a text: csv's default refuses fields over 128 KiB
    read = 0  # lines handed to the reader: on an error its line_num can still be the line before

    def lines() -> Iterator[str]:
        nonlocal read
        for read, line in enumerate(_read_lines(path), 1):  # noqa: B007 (read is the count the error names)
            yield line

    reader = csv.DictReader(lines())
    try:
        _check_header(path, reader.fieldnames or [], columns)
        for row in reader:
            if None in row:  # DictReader's place for the fields beyond the header's
                width = len(reader.fieldnames)
                raise _row_error(path, reader.line_num, f"{width} columns in the header, {width + len(row[None])} "
                                 'fields here: quote a text that holds a comma, e.g. "I love it, really"')
            yield reader.line_num, row
    except csv.Error as err:  # csv's advice for a lone \r, "open the file in universal-newline mode", is not the user's
        raise _row_error(path, read, f"not valid CSV ({err})" if "new-line character" not in str(err) else "a carriage "
                         "return (\\r) outside quotes (old Mac line endings?): save the file with \\n line endings") from None


def _check_header(path: Path, names: list[str], columns: tuple[str, ...]) -> None:
    """DataError for a header that names one of `columns` twice (DictReader keeps the last one's values,
    unsaid) or that is one field holding tabs or semicolons (a file separated by them, read as one column)."""
    twice = [name for name in columns if names.count(name) > 1]
    if twice:
        raise _row_error(path, 1, f"the header names {', '.join(map(repr, twice))} more than once: rename all but "
                                  "one, or remove the extra columns")
    if len(names) == 1 and ("\t" in names[0] or ";" in names[0]):
        raise _row_error(path, 1, f"the header is one column, {names[0]!r}: its fields are separated by "
                                  f"{'tabs' if chr(9) in names[0] else 'semicolons'}, and a .csv file's by commas: "
                                  "save it comma-separated")


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict]]:
    for lineno, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise _row_error(path, lineno, f"invalid JSON: {err.msg}") from None
        if not isinstance(row, dict):
            raise _row_error(path, lineno, "each line must be a JSON object")
        yield lineno, row


def _table_rows(path: Path, records: Iterator[tuple[int, dict]], cfg: DataConfig):
    for lineno, row in records:
        for column in (cfg.text_column, cfg.label_column):
            if column not in row:
                raise _row_error(path, lineno, f"no column {column!r} (set data.text_column / data.label_column)")
            if row[column] is None:  # csv: a row shorter than the header; jsonl: null
                raise _row_error(path, lineno, f"no value in column {column!r}: " + (
                    "it is null" if path.suffix == ".jsonl" else "the row has fewer fields than the header"))
        text = row[cfg.text_column]
        if not isinstance(text, str):
            raise _row_error(path, lineno, f"the text column {cfg.text_column!r} holds {text!r}, not a string: "
                                           "quote it as text")
        yield lineno, text, _label_names(row[cfg.label_column], path, lineno)


def _label_names(value, path: Path, lineno: int) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise _row_error(path, lineno, f"label list {text!r} is not valid JSON") from None
        else:
            text = text.replace(";", ",").replace("|", ",")
            return [name.strip() for name in text.split(",") if name.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise _row_error(path, lineno, f"labels must be a list of label names, got {value!r}")


def _label_file(path: Path) -> list[str]:
    """The label names of `path`, one per line; DataError for a file without names, a name listed twice, or a
    blank line between names (label ids index the lines)."""
    names: list[tuple[int, str]] = [(lineno, line.strip()) for lineno, line in enumerate(_read_lines(path), 1)]
    while names and not names[-1][1]:
        names.pop()  # blank lines at the end
    if not names:
        raise DataError(f"{path}: no label names (one per line)")
    first: dict[str, int] = {}
    for lineno, name in names:
        if not name:
            raise _row_error(path, lineno, "blank line between label names: a label's id is its line, so remove it")
        if name in first:
            raise _row_error(path, lineno, f"label {name!r} is listed a second time (first at line {first[name]}): "
                                           "each label once")
        first[name] = lineno
    return [name for _, name in names]


def _collect(path: Path, rows: Iterator[tuple[int, str, list[int]]], num_labels: int,
             allow_no_label: bool = False) -> Split:
    """Turn (line, text, label ids) rows into a Split, refusing empty texts, label-less rows and empty files."""
    texts, ids = [], []
    for lineno, text, label_ids in rows:
        if not text.strip():
            raise _row_error(path, lineno, "empty text")
        if not label_ids and not allow_no_label:
            raise _row_error(path, lineno, "no label")
        texts.append(text)
        ids.append(label_ids)
    if not texts:
        raise DataError(f"{path}: no examples (the split is empty)")
    return _from_ids(texts, ids, num_labels)


def _read_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file (a leading BOM dropped); DataError for a missing file or a bad line."""
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    with path.open("rb") as handle:  # decoded line by line, so an error names its line
        for lineno, raw in enumerate(handle, 1):
            try:
                yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise _row_error(path, lineno, f"not UTF-8 ({err.reason}): save the file as UTF-8") from None


def _row_error(path: Path, lineno: int, message: str) -> DataError:
    return DataError(f"{path}:{lineno}: {message}")


def _hub_dataset(name: str, subset: str):
    import datasets

    try:
        return datasets.load_dataset(name, subset)
    except (ConnectionError, OSError) as err:
        if hub.is_offline():
            raise UsageError(hub.unreachable(
                "data set", name, "pass --data-dir DIR with the files (GoEmotions .tsv, SemEval-2018 E-c .txt, "
                "or train/dev/test .csv/.jsonl), or --smoke for the built-in synthetic set")) from None
        raise UsageError(f"data set {name!r} ({subset}) could not be loaded from the hub: {err}") from None


_HUB_LOADERS: dict[str, Callable[[], EmotionData]] = {
    "goemotions": _load_goemotions_hub,
    "semeval2018": _load_semeval_hub,
}


_DIR_LOADERS: dict[str, Callable[[Path, DataConfig], EmotionData]] = {
    "goemotions": _load_goemotions_dir,
    "semeval2018": _load_semeval_dir,
    "csv": _load_table_dir,
    "jsonl": _load_table_dir,
}
