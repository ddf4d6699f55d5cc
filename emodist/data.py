"""Emotion data sets: load, check, subsample, tokenize, batch.

    data = emodist.data.load(cfg.data, seed=cfg.train.seed)     # -> EmotionData (labels + 3 splits)

Sources (data.dataset):
  goemotions   hub `google-research-datasets/go_emotions` (simplified), or a directory in the original
               layout: train.tsv, dev.tsv, test.tsv (text <TAB> comma-separated label ids <TAB> comment id)
               and emotions.txt (one label name per line, the ids index it).
  semeval2018  hub `SemEvalWorkshop/sem_eval_2018_task_1` (subtask5.english), or a directory with the
               official 2018-E-c-En-{train,dev,test-gold}.txt (header `ID Tweet anger ... trust`, 0/1 columns).
  csv, jsonl   {train,dev,test}.{csv,jsonl} with a text column and a label column holding a list of names
               (JSON list, or names separated by , ; or | in CSV). labels.txt (one name per line) fixes the
               label set and its order; otherwise it is the sorted set of train labels.
  synthetic    the built-in deterministic emotion set used by --smoke (`synthetic()`).
  auto         detect goemotions / semeval2018 / csv / jsonl from the files in data_dir.

Every bad input (missing file, malformed row, unknown label, empty text, empty split, bad encoding)
raises one UsageError naming the file and line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emodist.config import DataConfig
from emodist.runtime import hub
from emodist.runtime.errors import UsageError
from emodist.runtime.files import cache_root

SPLITS = ("train", "dev", "test")


@dataclass
class Split:
    texts: list[str]
    targets: np.ndarray
    """(examples, labels) float32 multi-hot."""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, size: int | None, seed: int) -> Split:
        """A seeded random subset of `size` examples in their original order (all of them if size is None)."""
        if size is None or size >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), size=size, replace=False))
        return Split([self.texts[i] for i in keep], self.targets[keep])


@dataclass
class EmotionData:
    name: str
    labels: list[str]
    splits: dict[str, Split]


def load(cfg: DataConfig, seed: int) -> EmotionData:
    """Load the configured data set, check it and apply the example caps. Raises UsageError."""
    name = detect(Path(cfg.data_dir)) if cfg.dataset == "auto" else cfg.dataset
    if name == "synthetic":
        data = synthetic(seed)
    elif cfg.data_dir is None:
        data = _HUB_LOADERS[name]()
    else:
        data = _DIR_LOADERS[name](Path(cfg.data_dir), cfg)
    if cfg.grouping != "none":
        data = group(data, cfg.grouping, Path(cfg.data_dir) if cfg.data_dir else None)
    caps = {"train": cfg.max_train_examples, "dev": cfg.max_eval_examples, "test": cfg.max_eval_examples}
    data.splits = {s: data.splits[s].subset(caps[s], seed) for s in SPLITS}
    return data


def detect(directory: Path) -> str:
    """The format of the files in `directory`; UsageError listing what was looked for otherwise."""
    if (directory / "train.tsv").exists() and (directory / "emotions.txt").exists():
        return "goemotions"
    if (directory / _SEMEVAL_FILES["train"]).exists():
        return "semeval2018"
    for fmt in ("jsonl", "csv"):
        if (directory / f"train.{fmt}").exists():
            return fmt
    raise UsageError(
        f"--data-dir {directory}: no known data layout: expected GoEmotions (train.tsv + emotions.txt), "
        f"SemEval-2018 E-c ({_SEMEVAL_FILES['train']}) or train.csv / train.jsonl"
    )


# ---------------------------------------------------------------------------------------------------
# GoEmotions


def _load_goemotions_dir(directory: Path, cfg: DataConfig) -> EmotionData:
    labels = _label_file(directory / "emotions.txt")
    splits = {}
    for split in SPLITS:
        path = directory / f"{split}.tsv"
        splits[split] = _collect(path, _goemotions_rows(path, len(labels)), len(labels))
    return EmotionData("goemotions", labels, splits)


def _goemotions_rows(path: Path, num_labels: int) -> Iterator[tuple[int, str, list[int]]]:
    for lineno, line in enumerate(_read_lines(path), 1):
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


# ---------------------------------------------------------------------------------------------------
# SemEval-2018 Task 1, E-c (English)

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


# ---------------------------------------------------------------------------------------------------
# Generic CSV / JSONL

_SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "val"), "test": ("test",)}


def _load_table_dir(directory: Path, cfg: DataConfig) -> EmotionData:
    fmt = cfg.dataset if cfg.dataset in ("csv", "jsonl") else detect(directory)
    files = {split: _find_split_file(directory, split, fmt) for split in SPLITS}
    reader = _csv_records if fmt == "csv" else _jsonl_records
    records = {split: list(_table_rows(path, reader(path), cfg)) for split, path in files.items()}

    labels_file = directory / "labels.txt"
    if labels_file.exists():
        labels = _label_file(labels_file)
    else:
        labels = sorted({name for _, _, names in records["train"] for name in names})
    if not labels:
        raise UsageError(f"{files['train']}: no labels in column {cfg.label_column!r}")
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
    for name in _SPLIT_NAMES[split]:
        if (directory / f"{name}.{fmt}").exists():
            return directory / f"{name}.{fmt}"
    raise UsageError(f"{directory}: missing {' or '.join(f'{n}.{fmt}' for n in _SPLIT_NAMES[split])}")


def _csv_records(path: Path) -> Iterator[tuple[int, dict]]:
    csv.field_size_limit(2**31 - 1)  # a long text is a text: csv's default refuses fields over 128 KiB
    read = 0  # lines handed to the reader: on an error its line_num can still be the line before

    def lines() -> Iterator[str]:
        nonlocal read
        for read, line in enumerate(_read_lines(path), 1):  # noqa: B007 (read is the count the error names)
            yield line

    reader = csv.DictReader(lines())
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as err:
        raise _row_error(path, read, f"not valid CSV ({err})") from None


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
            if row[column] is None:  # csv: a row shorter than the header
                raise _row_error(path, lineno, f"no value in column {column!r}: the row has fewer fields than the header")
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
            for separator in ",;|":
                text = text.replace(separator, ",")
            return [name.strip() for name in text.split(",") if name.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise _row_error(path, lineno, f"labels must be a list of label names, got {value!r}")


# ---------------------------------------------------------------------------------------------------
# The synthetic emotion set (--smoke)

SYNTHETIC_CUES = {
    "anger": ["angry", "furious", "outraged", "irritated", "livid", "enraged"],
    "fear": ["afraid", "scared", "terrified", "frightened", "anxious", "panicked"],
    "joy": ["happy", "delighted", "cheerful", "thrilled", "glad", "joyful"],
    "love": ["adore", "cherish", "treasure", "beloved", "devoted", "smitten"],
    "sadness": ["sad", "miserable", "heartbroken", "gloomy", "sorrowful", "depressed"],
    "surprise": ["surprised", "amazed", "astonished", "stunned", "startled", "speechless"],
}
_SUBJECTS = ["i", "we", "my sister", "the whole team", "our neighbour", "everyone", "my friend", "the kids"]
_CONTEXTS = ["after the meeting", "about the news", "this morning", "at the station", "on the phone",
             "during dinner", "when the letter came", "at work today", "after the game", "in the evening"]
_LINKS = ["and also", "but mostly", "and honestly", "and a little"]
SYNTHETIC_SIZES = {"train": 1024, "dev": 256, "test": 256}


def synthetic(seed: int = 0) -> EmotionData:
    """A deterministic multi-label emotion set whose cue words carry the labels (1-3 per example).

    Built for the `--smoke` runs: a tiny randomly initialised model can learn it in a few hundred steps,
    so a smoke run checks that training really learns, not only that it runs.
    """
    labels = list(SYNTHETIC_CUES)
    splits = {}
    for offset, split in enumerate(SPLITS):
        rng = random.Random(seed * 1000 + offset)
        texts, ids = [], []
        for _ in range(SYNTHETIC_SIZES[split]):
            chosen = rng.sample(range(len(labels)), k=rng.choices([1, 2, 3], weights=[5, 4, 1])[0])
            cues = [rng.choice(SYNTHETIC_CUES[labels[i]]) for i in chosen]
            feeling = f" {rng.choice(_LINKS)} ".join(cues)
            texts.append(f"{rng.choice(_SUBJECTS)} felt {feeling} {rng.choice(_CONTEXTS)}")
            ids.append(chosen)
        splits[split] = _from_ids(texts, ids, len(labels))
    return EmotionData("synthetic", labels, splits)


# ---------------------------------------------------------------------------------------------------
# Label groupings (data.grouping)

# The mapping files published with GoEmotions (github.com/google-research/google-research, goemotions/data,
# Apache-2.0): used when the data directory does not hold them (the hub copy of the data set lacks them).
GROUPINGS = {
    "ekman": ("ekman_mapping.json", {
        "anger": ["anger", "annoyance", "disapproval"],
        "disgust": ["disgust"],
        "fear": ["fear", "nervousness"],
        "joy": ["joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief", "pride",
                "admiration", "desire", "caring"],
        "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
        "surprise": ["surprise", "realization", "confusion", "curiosity"],
    }),
    "sentiment": ("sentiment_dict.json", {
        "positive": ["amusement", "excitement", "joy", "love", "desire", "optimism", "caring", "pride", "admiration",
                     "gratitude", "relief", "approval"],
        "negative": ["fear", "nervousness", "remorse", "embarrassment", "disappointment", "sadness", "grief",
                     "disgust", "anger", "annoyance", "disapproval"],
        "ambiguous": ["realization", "surprise", "curiosity", "confusion"],
    }),
}
KEPT_AS_IS = ("neutral",)
"""Labels a grouping keeps under their own name when no group lists them (GoEmotions' neutral)."""


def group(data: EmotionData, grouping: str, data_dir: Path | None) -> EmotionData:
    """`data` with its labels merged into groups: a text has a group when it has any label of the group.

    `grouping`: ekman, sentiment (from the data directory's mapping file when there is one, else the
    published mapping) or a JSON file {group: [labels]}. Every label must land in exactly one group, except
    those of KEPT_AS_IS, which stay themselves; UsageError otherwise.
    """
    if grouping in GROUPINGS:
        file_name, mapping = GROUPINGS[grouping]
        source = data_dir / file_name if data_dir is not None and (data_dir / file_name).is_file() else None
    else:
        source = Path(grouping)
    if source is not None:
        try:
            mapping = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UsageError(f"data.grouping: {source}: unreadable ({err})") from None
        if not (isinstance(mapping, dict) and all(isinstance(v, list) for v in mapping.values())):
            raise UsageError(f"data.grouping: {source} must be a JSON object {{group: [label, ...]}}")
    where = f"data.grouping={grouping}" + (f" ({source})" if source is not None and grouping in GROUPINGS else "")
    unknown = sorted({label for members in mapping.values() for label in members} - set(data.labels))
    if unknown:
        raise UsageError(f"{where}: {', '.join(unknown[:5])} not among the {data.name} labels: this grouping is "
                         f"for GoEmotions' 28 emotions (the data has {', '.join(data.labels[:5])}, ...)")
    owners: dict[str, list[str]] = {}
    for name, members in mapping.items():
        for label in members:
            owners.setdefault(label, []).append(name)
    twice = [f"{label} ({', '.join(groups)})" for label, groups in owners.items() if len(groups) > 1]
    if twice:
        raise UsageError(f"{where}: labels in more than one group: {'; '.join(twice[:5])}")
    ungrouped = [label for label in data.labels if label not in owners and label not in KEPT_AS_IS]
    if ungrouped:
        raise UsageError(f"{where}: no group for {', '.join(ungrouped[:5])}: add them to a group")
    groups = list(mapping) + [label for label in KEPT_AS_IS if label in data.labels and label not in owners]
    members = [[data.labels.index(m) for m in mapping.get(g, [g])] for g in groups]
    splits = {name: Split(split.texts, np.stack([split.targets[:, m].max(axis=1) for m in members], axis=1))
              for name, split in data.splits.items()}
    return EmotionData(f"{data.name}-{grouping if grouping in GROUPINGS else source.stem}", groups, splits)


# ---------------------------------------------------------------------------------------------------
# Shared checks


def _label_file(path: Path) -> list[str]:
    """The label names of `path`, one per line; UsageError for a file without names, a name listed twice, or a
    blank line between names (label ids index the lines)."""
    names: list[tuple[int, str]] = [(lineno, line.strip()) for lineno, line in enumerate(_read_lines(path), 1)]
    while names and not names[-1][1]:
        names.pop()  # blank lines at the end
    if not names:
        raise UsageError(f"{path}: no label names (one per line)")
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
        raise UsageError(f"{path}: no examples (the split is empty)")
    return _from_ids(texts, ids, num_labels)


def _from_ids(texts: list[str], ids: list[list[int]], num_labels: int) -> Split:
    targets = np.zeros((len(texts), num_labels), dtype=np.float32)
    for row, label_ids in enumerate(ids):
        targets[row, label_ids] = 1.0
    return Split(list(texts), targets)


def _read_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file (a leading BOM dropped); UsageError for a missing file or a bad line."""
    if not path.is_file():
        raise UsageError(f"{path}: missing file")
    with path.open("rb") as handle:  # decoded line by line, so an error names its line
        for lineno, raw in enumerate(handle, 1):
            try:
                yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise _row_error(path, lineno, f"not UTF-8 ({err.reason}): save the file as UTF-8") from None


def _row_error(path: Path, lineno: int, message: str) -> UsageError:
    return UsageError(f"{path}:{lineno}: {message}")


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


# ---------------------------------------------------------------------------------------------------
# Tokenize and batch


def tokenize(data: EmotionData, tokenizer, max_length: int, cache_dir: str | None, accelerator) -> dict:
    """Tokenized `datasets.Dataset` per split (the tokenizer's model inputs and float labels), cached.

    The cache key covers the tokenizer, max_length, texts and targets, so a cached split is reused only
    for exactly the same input. The local main process tokenizes first and the others read its cache.
    """
    import datasets

    root = cache_root(cache_dir) / "tokenized"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"the tokenization cache {root} cannot be created ({err.strerror}): set data.cache_dir (or "
                         "$EMODIST_CACHE) to a writable directory") from None
    tokenizer_id = _tokenizer_fingerprint(tokenizer)

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    out = {}
    with accelerator.local_main_process_first():
        for split, part in data.splits.items():
            key = _fingerprint(tokenizer_id, str(max_length), *part.texts, part.targets.tobytes())
            raw = datasets.Dataset.from_dict({"text": part.texts, "labels": part.targets.tolist()})
            cached = root / f"{split}-{key}.arrow"

            def tokenized(raw=raw, cached=cached, key=key, split=split):
                return raw.map(encode, batched=True, batch_size=1000, remove_columns=["text"],
                               cache_file_name=str(cached), new_fingerprint=key, desc=f"tokenize {split}")
            try:
                out[split] = tokenized()
            except Exception as err:  # noqa: BLE001 - pyarrow's errors of a damaged file have no common base
                if not cached.is_file():
                    raise
                print(f"emodist: the cached tokens {cached} do not read ({type(err).__name__}): tokenizing again",
                      file=sys.stderr)
                cached.unlink()  # ours, and derived: the texts are tokenized again into it
                out[split] = tokenized()
    return out


def fingerprint_texts(texts: list[str]) -> str:
    return _fingerprint(*texts)


def split_fingerprint(split: Split) -> str:
    """A short hash of a split's texts and labels: two runs scored on the same examples share it."""
    return _fingerprint(*split.texts, split.targets.tobytes())


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        state = repr(sorted(tokenizer.get_vocab().items()))
    else:  # truncation and padding are per-call settings the backend keeps from its last call
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        state = json.dumps(state, sort_keys=True)
    return _fingerprint(state, type(tokenizer).__name__, str(tokenizer.padding_side))


def _fingerprint(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def collator(tokenizer, pad_to_multiple_of: int = 8):
    """Pads a list of tokenized examples to the longest, rounded up to a multiple of `pad_to_multiple_of`."""
    from transformers import DataCollatorWithPadding

    multiple = pad_to_multiple_of if pad_to_multiple_of > 1 else None
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple, return_tensors="pt")


def lengths(dataset) -> np.ndarray:
    """Token count of every example of a tokenized split (read from the Arrow column, no decoding)."""
    import pyarrow.compute as pc

    column = dataset.with_format("arrow")[:]["input_ids"]
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
