"""Batch inference on new text with an exported `model/` directory (a full model or an adapter).

    classifier = Classifier.load("runs/minilm-x/model")
    classifier.predict(["I can't believe it worked!", "ugh, again?"])   # [["surprise", "joy"], ["annoyance"]]
    classifier.probabilities(texts)                                      # numpy, texts x labels

Texts are tokenized in one call, sorted by length (longest first) and cut into batches that pad only to
their own longest text; results come back in the order of the input. No autograd (inference mode).
Labels are those whose probability reaches their threshold: the per-label thresholds tuned on dev
(model/thresholds.json) when the run wrote them, else 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from emodist import sampling, thresholds


class Classifier:
    def __init__(self, model, tokenizer, cut: np.ndarray, max_length: int = 128, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.cut = cut
        self.max_length = max_length
        self.batch_size = batch_size

    @classmethod
    def load(cls, model_dir: str | Path, device: str | torch.device = "cpu", max_length: int = 128,
             batch_size: int = 64) -> Classifier:
        """The model of `model_dir` with its tuned thresholds (0.5 for every label without them)."""
        from emodist.modeling import load_trained

        model, tokenizer = load_trained(model_dir, device)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        tuned = thresholds.load(Path(model_dir))
        cut = thresholds.for_labels(tuned, labels) if tuned else np.full(len(labels), 0.5)
        return cls(model, tokenizer, cut, max_length, batch_size)

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Sigmoid probabilities, float32, one row per text (in the order given) and one column per label."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = sampling.by_length([len(x) for x in ids])
        device = next(self.model.parameters()).device
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
            logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[rows] = torch.sigmoid(logits.float()).cpu().numpy()
        return out

    def predict(self, texts: Sequence[str]) -> list[list[str]]:
        """The labels of each text: those whose probability reaches the label's threshold."""
        chosen = self.probabilities(texts) >= self.cut
        return [[label for label, on in zip(self.labels, row, strict=True) if on] for row in chosen]
