"""Batch inference on new text with an exported `model/` directory (a full model or an adapter).

    classifier = Classifier.load("runs/minilm-x/model")
    classifier.predict(["I can't believe it worked!", "ugh, again?"])   # [["surprise", "joy"], ["annoyance"]]
    classifier.probabilities(texts)                                      # numpy, texts x labels

Texts are tokenized in one call, sorted by length (longest first) and cut into batches that pad only to
their own longest text; results come back in the order of the input. No autograd (inference mode).
Labels are those whose probability reaches their threshold: the per-label thresholds tuned on dev
(model/thresholds.json) when the run wrote them, else 0.5. An ONNX export (`launch/export.py --onnx`) is
served by ONNX Runtime, with the same output.

Precision (`precision`, `launch/predict.py --precision`): `auto`, the default, runs a torch model under bf16
autocast where the hardware multiplies bf16 (an Ampere or newer GPU; a CPU with AVX512-BF16 or AMX, the rule by which
`train.mixed_precision=auto` trains there), else without autocast; `bf16` and `fp32` choose. Measured on a
1-epoch minilm run, the 5,427 GoEmotions test texts, a 2-core AMD EPYC with AVX512-BF16 (bench/RESULTS.md):
bf16 autocast ran in half the time of float32, gave the same labels at the tuned thresholds for 99.67% of the
texts, and probabilities 1.2e-4 apart on average (at most 0.0096).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
import yaml

from emodist.data import sampling
from emodist.models import readable_tokens
from emodist.runtime import process
from emodist.runtime.errors import UsageError, not_text
from emodist.scoring import thresholds

DEFAULT_LENGTH = 128
"""Tokens read per text from a directory that says nothing of its own length (the schema's data.max_length)."""
PRECISIONS = ("auto", "bf16", "fp32")
"""What `Classifier.load` takes: bf16 autocast where the hardware has it, always, or never."""


class Classifier:
    def __init__(self, model, tokenizer, cut: np.ndarray, max_length: int = 128, batch_size: int = 64,
                 precision: str = "fp32", length_name: str = "max_length"):
        for name, value, least in ((length_name, max_length, 8), ("batch_size", batch_size, 1)):
            if not isinstance(value, Integral) or isinstance(value, bool) or value < least:
                raise UsageError(f"{name} {value!r}: must be a whole number, at least {least}")
        longest = readable_tokens(model.config)
        if longest and max_length > longest:  # past it, the position embeddings fail on a tensor size
            raise UsageError(f"{length_name} {max_length}: this model reads at most {longest} tokens: use {length_name} "
                             f"{longest} or less")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.cut = cut
        self.max_length = max_length
        self.batch_size = batch_size
        self.precision = precision
        """bf16 (the forward passes run under bf16 autocast) or fp32 (no autocast: the weights' own dtype)."""
        self.warning: str | None = None
        """What the dev scores said of the labels the model has not learned (thresholds.json), if anything."""
        self.tuned = False
        """Whether `cut` holds thresholds tuned on dev (thresholds.json), not 0.5 for every label."""
        self.source = getattr(model.config, "_name_or_path", "") or "the model"
        """What messages name the model by: the directory `load` read (an adapter's config names its base)."""

    @classmethod
    def load(cls, model_dir: str | Path, device: str | torch.device = "cpu", max_length: int | None = None,
             batch_size: int = 64, precision: str = "auto", length_name: str = "max_length") -> Classifier:
        """The model of `model_dir` with its tuned thresholds (0.5 for every label without them): a torch model
        directory, or an ONNX export (`launch/export.py --onnx`), served by ONNX Runtime. `max_length`: tokens
        read per text, by default as many as the run trained and tuned its thresholds at (`trained_length`).
        `precision`: one of PRECISIONS (see the module's text)."""
        from emodist.serve import onnx_export
        from emodist.serve.model_dir import load_trained

        model_dir = model_dir_of(Path(model_dir))  # a run directory serves its model/, as for launch/predict.py
        onnx = onnx_export.is_onnx_dir(Path(model_dir))
        device = device_of(device, said="device")  # "cuda" without a GPU failed in torch's own assertion
        precision = serving_precision(precision, device, onnx)
        if onnx:
            model, tokenizer = onnx_export.load(Path(model_dir), device)
        else:
            model, tokenizer = load_trained(model_dir, device)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        tuned = thresholds.load(Path(model_dir))
        cut = thresholds.for_labels(tuned, labels, Path(model_dir) / thresholds.FILE) if tuned else np.full(len(labels), 0.5)
        length = trained_length(Path(model_dir), tuned, model.config) if max_length is None else max_length
        classifier = cls(model, tokenizer, cut, length, batch_size, precision, length_name)
        classifier.warning = thresholds.warning(tuned) if tuned else None
        classifier.tuned = tuned is not None
        classifier.source = str(model_dir)
        return classifier

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Sigmoid probabilities, float32, one row per text (in the order given) and one column per label. A
        str is one text (as for transformers.pipeline), not a sequence of one-character texts."""
        texts = self._texts(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = sampling.by_length([len(x) for x in ids])
        device = self.model.device
        bf16 = self.precision == "bf16"
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[rows] = torch.sigmoid(logits.float()).cpu().numpy()
        broken = int((~np.isfinite(out)).any(axis=1).sum())
        if broken:  # NaN reaches no threshold: every label would be silently off
            raise UsageError(f"{self.source}: its probabilities for {broken} of {len(texts)} texts are not numbers (NaN): "
                             "its weights hold NaN or inf (a damaged file, or a run that diverged): serve another "
                             "export or checkpoint")
        return out

    @staticmethod
    def _texts(texts: str | Sequence[str]) -> list[str]:
        """`texts` as a list; UsageError (a ValueError) for what no tokenizer reads, naming which entry it is."""
        if isinstance(texts, (bytes, bytearray, Mapping)) or not isinstance(texts, (str, Iterable)):
            raise UsageError(f"Classifier: texts must be a str or a sequence of str, not {type(texts).__name__}"
                             + (": decode the bytes first" if isinstance(texts, (bytes, bytearray)) else ""))
        texts = [texts] if isinstance(texts, str) else list(texts)
        for number, text in enumerate(texts):
            if why := not_text(text):
                raise UsageError(f"Classifier: text {number} is {why}" if not isinstance(text, str) else
                                 f"Classifier: text {number} holds {why}")
        return texts

    def truncated(self, texts: Sequence[str]) -> int:
        """How many of `texts` are longer than max_length tokens (their ends are not read). Only texts of more
        UTF-8 bytes than that can be: every token covers at least one byte (a byte-level BPE, or a byte fallback,
        may spend four tokens on one character: an emoji), besides the few special ones."""
        long = [t for t in ([texts] if isinstance(texts, str) else texts) if len(t.encode("utf-8")) > self.max_length - 4]
        if not long:
            return 0
        return sum(len(ids) > self.max_length for ids in self.tokenizer(long)["input_ids"])

    def predict(self, texts: Sequence[str]) -> list[list[str]]:
        """The labels of each text: those whose probability reaches the label's threshold."""
        return self.labels_of(self.probabilities(texts))

    def labels_of(self, probabilities: np.ndarray) -> list[list[str]]:
        """The labels of each row of `probabilities`: those that reach the label's threshold."""
        chosen = probabilities >= self.cut
        return [[label for label, on in zip(self.labels, row, strict=True) if on] for row in chosen]


def trained_length(model_dir: Path, tuned: dict | None, config) -> int:
    """Tokens per text the model was trained and its thresholds tuned at, at most what its position embeddings
    reach: the `max_length` its thresholds.json (`tuned`) records; for a model/ written before emodist recorded
    it, data.max_length of the run it lies in (its model/, or an export there: the run's thresholds.json is
    theirs); else DEFAULT_LENGTH, what such directories were read at. Not the tokenizer's model_max_length:
    before, that was the base's (512 for BERT), not the run's."""
    length = (tuned or {}).get("max_length") or _run_length(Path(model_dir).resolve())
    return min(length, readable_tokens(config) or length)


def _run_length(model_dir: Path) -> int:
    run = model_dir.parent
    with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        if (run / thresholds.FILE).read_bytes() == (model_dir / thresholds.FILE).read_bytes():
            length = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["data"]["max_length"]
            if isinstance(length, int) and length > 0:
                return length
    return DEFAULT_LENGTH


def serving_precision(requested: str, device: torch.device, onnx: bool = False) -> str:
    """bf16 or fp32: what `requested` (one of PRECISIONS) means for a model served on `device` (an ONNX export
    when `onnx`). UsageError for a choice that cannot run there."""
    if requested not in PRECISIONS:
        raise UsageError(f"--precision {requested}: choose one of {', '.join(PRECISIONS)}")
    if onnx:
        if requested == "bf16":
            raise UsageError("--precision bf16: an ONNX export runs in the precision it was exported in (ONNX Runtime, "
                             "no autocast): use --precision auto, or serve the torch model/ directory in bf16")
        return "fp32"
    gpu = device.type == "cuda"
    native = process.gpu_has_native_bf16(device) if gpu else process.cpu_has_native_bf16()
    if requested == "bf16" and gpu and not native:
        raise UsageError("--precision bf16: this GPU does not compute in bf16: use --precision fp32 (or auto)")
    if requested == "auto":
        return "bf16" if native else "fp32"
    return requested


def device_of(name, said: str = "--device") -> torch.device:
    """The torch device `name` (a string or a torch.device) names; UsageError, naming it as `said`, for one this
    machine does not have."""
    shown = f"{said} {name}" if said.startswith("--") else f"{said} {str(name)!r}"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"{shown}: not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            instead = "--device cpu" if said.startswith("--") else "device='cpu'"
            raise UsageError(f"{shown}: this machine has no CUDA GPU (or no CUDA build of torch): use {instead}")
        if device.index is not None and device.index >= count:
            raise UsageError(f"{shown}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type != "cpu":
        raise UsageError(f"{shown}: emodist runs on cpu or cuda devices")
    return device


def model_dir_of(path: Path) -> Path:
    """The exported model directory `path` names: itself, or the model/ of a run directory."""
    if path.name == "smoke-base" and (path.parent / "model").is_dir():  # the untrained random base of a --smoke run
        raise UsageError(f"{path}: the random base a --smoke run started from, not a trained model: pass the run, "
                         f"{path.parent}")
    for candidate in (path, path / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    if unfinished := unfinished_run(path):
        raise UsageError(f"{unfinished}, then predict")
    raise UsageError(f"{path}: no model here (no config.json in it or in {path / 'model'}): pass a run's model/ "
                     "directory, a run directory, or an exported model")


def unfinished_run(path: Path) -> str | None:
    """The one line for `path`, a run directory (or its model/ directory) of a run that has not finished, with
    the command that finishes it; None for anything else."""
    from emodist.rundir.contract import MARKER
    from emodist.rundir.lock import in_use

    run = path.parent if path.name == "model" else path
    if not (run / MARKER).is_file() or (run / "summary.json").is_file():
        return None
    if holder := in_use(run):  # a run trained further: its summary goes until the new finish writes its own
        return f"{run}: a run being trained now ({holder}): its model comes with this training's finish: wait for it"
    return (f"{run}: a run that has not finished (no summary.json, so no model yet): finish it with `accelerate launch "
            f"launch/train.py --config {run / 'config.yaml'} --output-dir {run} --resume auto`")
