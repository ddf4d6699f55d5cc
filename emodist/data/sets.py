"""The data set in memory: a split's texts and 0/1 label matrix, the three splits with their label names,
and fingerprints that tell two copies of a split apart.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

import numpy as np

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


def _from_ids(texts: list[str], ids: list[list[int]], num_labels: int) -> Split:
    targets = np.zeros((len(texts), num_labels), dtype=np.float32)
    for row, label_ids in enumerate(ids):
        targets[row, label_ids] = 1.0
    return Split(list(texts), targets)


def fingerprint_texts(texts: list[str]) -> str:
    return _fingerprint(*texts)


def split_fingerprint(split: Split) -> str:
    """A short hash of a split's texts and labels: two runs scored on the same examples share it."""
    return _fingerprint(*split.texts, split.targets.tobytes())


def identity(splits: dict[str, Split]) -> dict[str, str]:
    """What a resume must find unchanged in the data: {"data.split.NAME": "N texts, FINGERPRINT"} per split."""
    return {f"data.split.{name}": f"{len(split)} texts, {split_fingerprint(split)}" for name, split in splits.items()}


SHARED_WARNING = 0.01
"""The share of dev's or test's texts also in train above which a run warns (GoEmotions' own: 0.8% and 0.7%)."""


def shared_with_train(splits: dict[str, Split]) -> dict[str, int]:
    """How many of dev's and of test's texts appear, verbatim, in train too: scored there, the model has seen them."""
    train = set(splits["train"].texts)
    return {name: sum(text in train for text in splits[name].texts) for name in ("dev", "test")}


def shared_warning(splits: dict[str, Split], shared: dict[str, int]) -> str | None:
    """One line when more than SHARED_WARNING of dev's or test's texts are also train's, else None."""
    over = [f"{count:,} of {len(splits[name]):,} {name} texts ({count / len(splits[name]):.1%})"
            for name, count in shared.items() if count > SHARED_WARNING * len(splits[name])]
    if not over:
        return None
    return (f"{' and '.join(over)} are also in train, word for word: the model trained on them, so their scores "
            "read high; keep each text in one split")


def untrained_labels(data: EmotionData) -> list[str]:
    """The labels no train example carries (absent from train, or cut out with data.max_train_examples): the model
    cannot learn them, and they score 0 F1 whatever it is trained for."""
    counts = data.splits["train"].targets.sum(axis=0)
    return [label for label, count in zip(data.labels, counts, strict=True) if not count]


def label_warnings(data: EmotionData) -> list[str]:
    """One line each on the label set: the labels no train example carries, the names that differ only in case
    (a typo, `Anger` beside `anger`, is a label of its own, which test may never carry: F1 0 in macro-F1)."""
    warnings = []
    if untrained := untrained_labels(data):
        shown = ", ".join(untrained[:5]) + (f" and {len(untrained) - 5} more" if len(untrained) > 5 else "")
        warnings.append(f"{len(untrained)} of {len(data.labels)} labels have no train examples ({shown}): the model "
                        "cannot learn them, and they score 0 F1; add train examples of them, or leave them out of the "
                        "label set")
    absent = [label for label, n in zip(data.labels, data.splits["test"].targets.sum(axis=0), strict=True) if not n]
    if absent and set(absent) != set(untrained):  # dev's are said with the thresholds; train's above
        warnings.append(f"{len(absent)} of {len(data.labels)} labels have no test examples (" + ", ".join(absent[:5])
                        + (f" and {len(absent) - 5} more" if len(absent) > 5 else "") + "): their test F1 is 0 "
                        "whatever the model does, which lowers test macro-F1")
    folded: dict[str, list[str]] = {}
    for label in data.labels:  # NFKC: "café" typed two ways (é, or e and a combining accent) looks the same
        folded.setdefault(unicodedata.normalize("NFKC", label).casefold(), []).append(label)
    if twins := [" and ".join(repr(n) if n.isascii() else f"{n!r} ({ascii(n)[1:-1]})" for n in names)
                 for names in folded.values() if len(names) > 1]:
        warnings.append(f"labels {'; '.join(twins)} differ only in case or Unicode form: each is a label of its own; "
                        "if one is a typo, write it as the other in the data")
    if conflicting := _conflicting(data.splits["train"]):
        share = conflicting / len(set(data.splits["train"].texts))
        if share > SHARED_WARNING:  # GoEmotions' own: 58 of 43,227 texts (0.13%)
            warnings.append(f"{conflicting} train texts ({share:.1%}) appear more than once with different labels: "
                            "the model is taught both answers; merge their labels, or keep one of each")
    return warnings


def _conflicting(split: Split) -> int:
    """How many distinct texts of `split` come with more than one label set."""
    seen: dict[str, bytes] = {}
    conflicting: set[str] = set()
    for text, row in zip(split.texts, split.targets, strict=True):
        if seen.setdefault(text, row.tobytes()) != row.tobytes():
            conflicting.add(text)
    return len(conflicting)


def _fingerprint(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:20]
