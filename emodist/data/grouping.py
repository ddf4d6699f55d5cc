"""Coarser labels (data.grouping): GoEmotions' Ekman and sentiment groups, or a JSON file {group: [labels]}.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emodist.data.sets import EmotionData, Split
from emodist.runtime.errors import DataError, not_text, shown

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


class _Twice(ValueError):
    pass


def _unique_groups(pairs: list[tuple]) -> dict:
    """json's object_pairs_hook: a key named twice is an error (json keeps the last one's labels, unsaid)."""
    names = [key for key, _ in pairs]
    twice = next((key for key in names if names.count(key) > 1), None)
    if twice is not None:
        raise _Twice(twice)
    return dict(pairs)


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
        try:  # a byte order mark is read as data files read it; a group named twice is refused, not merged
            mapping = json.loads(source.read_text(encoding="utf-8-sig"), object_pairs_hook=_unique_groups)
        except _Twice as twice:
            raise DataError(f"data.grouping: {source}: group {str(twice)!r} is named twice: list its labels once, "
                            "under one name") from None
        except (OSError, ValueError) as err:
            raise DataError(f"data.grouping: {source}: unreadable ({err})") from None
        if not (isinstance(mapping, dict) and all(isinstance(v, list) for v in mapping.values())):
            raise DataError(f"data.grouping: {source} must be a JSON object {{group: [label, ...]}}")
        bad = next((name for name, members in mapping.items() if not name.strip() or not_text(name) or not members
                    or not all(isinstance(m, str) for m in members) or len(set(members)) < len(members)), None)
        if bad is not None:
            raise DataError(f"data.grouping: {source}: group {bad!r} lists {shown(mapping[bad])}: each group has a "
                            "name and lists one or more label names, as strings, each once")
    where = f"data.grouping={grouping}" + (f" ({source})" if source is not None and grouping in GROUPINGS else "")
    unknown = sorted({label for members in mapping.values() for label in members} - set(data.labels))
    if unknown:
        meant = "for GoEmotions' 28 emotions" if source is None else "for other labels: name the data's own"
        raise DataError(f"{where}: {', '.join(unknown[:5])} not among the {data.name} labels: this grouping is "
                        f"{meant} (the data has {', '.join(data.labels[:5])}, ...)")
    owners: dict[str, list[str]] = {}
    for name, members in mapping.items():
        for label in members:
            owners.setdefault(label, []).append(name)
    twice = [f"{label} ({', '.join(groups)})" for label, groups in owners.items() if len(groups) > 1]
    if twice:
        raise DataError(f"{where}: labels in more than one group: {'; '.join(twice[:5])}")
    ungrouped = [label for label in data.labels if label not in owners and label not in KEPT_AS_IS]
    if ungrouped:
        raise DataError(f"{where}: no group for {', '.join(ungrouped[:5])}: add them to a group")
    kept = [label for label in KEPT_AS_IS if label in data.labels and label not in owners]
    clash = [label for label in kept if label in mapping]
    if clash:  # two labels of one name: the second would shadow the first in id2label and the thresholds
        raise DataError(f"{where}: group {clash[0]!r} has the name of a label kept as itself ({clash[0]}, which no "
                        f"group lists): rename the group, or list {clash[0]} in a group")
    groups = list(mapping) + kept
    members = [[data.labels.index(m) for m in mapping.get(g, [g])] for g in groups]
    splits = {name: Split(split.texts, np.stack([split.targets[:, m].max(axis=1) for m in members], axis=1))
              for name, split in data.splits.items()}
    return EmotionData(f"{data.name}-{grouping if grouping in GROUPINGS else source.stem}", groups, splits)
