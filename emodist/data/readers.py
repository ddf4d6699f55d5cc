"""The readers of every data source (data.dataset): GoEmotions and SemEval 2018 E-c in their original
layouts or from the hub, CSV and JSON lines (`tables`), the synthetic set; each bad row refused naming its
file and line.

    data = load(cfg.data, seed=cfg.train.seed)     # -> EmotionData (labels + 3 splits)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

from emodist.config import DataConfig
from emodist.data.grouping import group
from emodist.data.rows import collect, label_file, read_lines, row_error
from emodist.data.sets import SPLITS, EmotionData, _from_ids
from emodist.data.synthetic import synthetic
from emodist.data.tables import load_table_dir
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
    """The format of the files in `directory`; DataError listing what was looked for otherwise, or naming the
    formats when it holds more than one (which one the user means is theirs to say)."""
    found = [name for name, files in _LAYOUTS.items() if all((directory / file).exists() for file in files)]
    if len(found) > 1:
        names = ", ".join(f"{_LAYOUTS[name][0]} ({name})" for name in found)
        raise DataError(f"data directory {directory}: holds more than one data set ({names}): set " + " or ".join(
            f"data.dataset={name}" for name in found) + ", or keep one data set in the directory")
    if found:
        return found[0]
    raise DataError(f"data directory {directory}: no known data layout: expected GoEmotions (train.tsv + emotions.txt), "
                    f"SemEval-2018 E-c ({_SEMEVAL_FILES['train']}) or train.csv / train.jsonl")


def _check_layout(directory: Path, name: str) -> None:
    """DataError when `directory` lacks data.dataset=`name`'s layout and holds another (e.g. data.data_dir set
    without --data-dir, which keeps the default goemotions), naming it."""
    if all((directory / file).exists() for file in _LAYOUTS[name]):
        return  # the named layout is there (whatever else the directory holds)
    try:
        there = detect(directory)
    except DataError:
        return  # no known layout at all: the loader names the file it misses
    if there != name:
        raise DataError(f"data.dataset={name}, but {directory} holds the {there} layout: set data.dataset={there} "
                        "(or auto), or pass it as --data-dir, which detects the layout")


def _load_goemotions_dir(directory: Path, cfg: DataConfig) -> EmotionData:
    labels = label_file(directory / "emotions.txt")
    splits = {}
    for split in SPLITS:
        path = directory / f"{split}.tsv"
        splits[split] = collect(path, _goemotions_rows(path, len(labels)), len(labels))
    return EmotionData("goemotions", labels, splits)


def _goemotions_rows(path: Path, num_labels: int) -> Iterator[tuple[int, str, list[int]]]:
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():  # a blank line (often a file's last), skipped as in .jsonl
            continue
        columns = line.rstrip("\r\n").split("\t")
        if len(columns) not in (2, 3):
            raise row_error(path, lineno, f"expected 3 tab-separated columns (text, label ids, id), got {len(columns)}")
        text, ids = columns[0], columns[1]
        if not ids.strip():
            raise row_error(path, lineno, "no label ids in the second column: every GoEmotions example has at least "
                                           "one (e.g. 27 for neutral)")
        label_ids = []
        for token in ids.split(","):
            token = token.strip()
            if not (token.isascii() and token.isdigit()):
                raise row_error(path, lineno, f"label id {token!r} is not a label id: ids are whole numbers "
                                               f"0-{num_labels - 1}, comma-separated (the lines of emotions.txt)")
            label_id = int(token)
            if label_id >= num_labels:
                raise row_error(path, lineno, f"label id {label_id} is out of range: emotions.txt names "
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
_LAYOUTS = {"goemotions": ("train.tsv", "emotions.txt"), "semeval2018": (_SEMEVAL_FILES["train"],),
            "jsonl": ("train.jsonl",), "csv": ("train.csv",)}
"""The files that make each directory layout (data.dataset), the first one the file a refusal names."""
_SEMEVAL_LABELS = ["anger", "anticipation", "disgust", "fear", "joy", "love", "optimism", "pessimism",
                   "sadness", "surprise", "trust"]


def _load_semeval_dir(directory: Path, cfg: DataConfig) -> EmotionData:
    splits = {}
    for split in SPLITS:
        path = directory / _SEMEVAL_FILES[split]
        splits[split] = collect(path, _semeval_rows(path), len(_SEMEVAL_LABELS), allow_no_label=True)
    return EmotionData("semeval2018", list(_SEMEVAL_LABELS), splits)


def _semeval_rows(path: Path) -> Iterator[tuple[int, str, list[int]]]:
    lines = read_lines(path)
    header = next(lines, "").rstrip("\r\n").split("\t")
    if header[2:] != _SEMEVAL_LABELS:
        raise row_error(path, 1, f"expected the header ID, Tweet, {', '.join(_SEMEVAL_LABELS)}")
    for lineno, line in enumerate(lines, 2):
        if not line.strip():  # a blank line (often a file's last), skipped as in the other formats
            continue
        columns = line.rstrip("\r\n").split("\t")
        if len(columns) != len(header):
            raise row_error(path, lineno, f"expected {len(header)} tab-separated columns, got {len(columns)}")
        flags = columns[2:]
        if any(flag not in ("0", "1") for flag in flags):
            raise row_error(path, lineno, "emotion columns must be 0 or 1 (the unlabeled test file has NONE: "
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
    "csv": functools.partial(load_table_dir, fmt="csv"),
    "jsonl": functools.partial(load_table_dir, fmt="jsonl"),
}
