"""The built-in synthetic emotion set of `--smoke` runs: deterministic, multi-label, learnable.
"""

from __future__ import annotations

import random

from emodist.data.sets import SPLITS, EmotionData, _from_ids

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
    splits, seen = {}, set()
    for offset, split in enumerate(SPLITS):
        rng = random.Random(seed * 1000 + offset)
        texts, ids = [], []
        while len(texts) < SYNTHETIC_SIZES[split]:
            chosen = rng.sample(range(len(labels)), k=rng.choices([1, 2, 3], weights=[5, 4, 1])[0])
            cues = [rng.choice(SYNTHETIC_CUES[labels[i]]) for i in chosen]
            feeling = f" {rng.choice(_LINKS)} ".join(cues)
            text = f"{rng.choice(_SUBJECTS)} felt {feeling} {rng.choice(_CONTEXTS)}"
            if split != "train" and text in seen:  # dev and test score texts the model has not trained on
                continue
            texts.append(text)
            ids.append(chosen)
        seen.update(texts if split == "train" else ())
        splits[split] = _from_ids(texts, ids, len(labels))
    return EmotionData("synthetic", labels, splits)
