"""A finished run's model in ONNX, float32 or int8, with its parity to the torch model measured on the run's
test split, and the runtime that serves it.

    parity = onnx_export.export(Path("runs/x"), Path("runs/x/export-onnx-int8"), quantize="int8")
    model = onnx_export.OnnxModel.load(Path("runs/x/export-onnx-int8"))     # what Classifier.load serves

The graph is transformers' own ONNX export (`transformers.exporters.OnnxExporter`: torch.export, then
torch.onnx with the fixes transformers keeps for its architectures), dynamic in batch size and length, of the
model `launch/export.py` writes (a LoRA adapter merged into its base in float32, a QLoRA adapter into its
base loaded unquantized), in float32. `int8` is ONNX Runtime's dynamic quantization (`quantize_dynamic`:
int8 weights per channel, each batch's activations quantized as it runs, no calibration data; `INT8`).
Beside the graph (`model.onnx`, listed in `export.json`): config.json with id2label, the tokenizer,
thresholds.json, parity.json and a model card.

Parity: the export and the torch model it came from score the run's test split in the same batches;
parity.json holds the largest and the mean probability difference, the share of texts given the same labels
at the tuned thresholds, and micro/macro-F1 of both there. `TOLERANCES` says what passes; an export that
fails is not kept, unless `accept_drift`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from emodist.runtime.errors import DataError, UsageError
from emodist.serve import onnx_graph
from emodist.serve.card import local_copy, local_path, model_card

MANIFEST = "export.json"
"""The file transformers' exporters write beside their graphs: which file holds which component."""
PARITY = "parity.json"
QUANTIZATIONS = ("int8",)
TOLERANCES = {
    "float32": {"max_abs_diff": 1e-4},
    "int8": {"label_agreement": 0.99, "f1_macro_gap": 0.005},
}
"""What an export must meet on the test split to be kept: float32 probabilities within 1e-4 of the torch
model's; int8 labels (at the tuned thresholds) identical for 99% of the texts and macro-F1 within 0.005."""
INT8 = {"per_channel": True, "op_types_to_quantize": ["MatMul"]}
"""How `int8` quantizes: the MatMuls only (the embeddings and the pooler and classifier Gemms stay float32),
each weight per output channel. Measured on a 1-epoch minilm GoEmotions run, test split, against the
float32 export: the same labels for 93.3% of the texts and macro-F1 0.0013 apart, where ONNX Runtime's
defaults (per-tensor, every quantizable op) gave 84.7%; at the same speed (bench/RESULTS.md)."""
OPSETS = {"bert": 23, "distilbert": 23}
"""The ONNX opset an encoder's graph is written in. From 23, ONNX has an `Attention` op, and torch's exporter
writes each layer's scaled-dot-product attention as one (ONNX Runtime >= 1.23 runs it on CPUs) instead of the
MatMul, mask, Softmax and MatMul nodes the exporter's default opset spells it out in. Measured on the minilm run
of bench/RESULTS.md: the same probabilities within 2e-6 of the torch model, and int8 faster than the
default opset's graph (bench/predict_throughput.py). Decoders (gemma, mistral) keep the exporter's default: at
23 their rotary embeddings become ONNX's `RotaryEmbedding` op too, which ONNX Runtime 1.32 refuses to run for
these graphs (its cos/sin caches' shape). An encoder's graph is then rewritten to run those ops on (batch, length,
hidden) tensors, without the Transposes and Reshapes around them (emodist.serve.onnx_graph.attention_3d)."""
CPU_SESSION_CONFIG = {"optimization.disable_specified_optimizers": "SkipLayerNormFusion"}
"""How ONNX Runtime runs an export on CPUs. Its SkipLayerNormalization fusion (each residual Add and the
LayerNormalization after it as one kernel) made minilm's graphs slower on the AVX-512 EPYC of bench/RESULTS.md,
ONNX Runtime 1.32: without it, int8 ran 1.24x the examples/s on 2 threads (1.26x on 1) and float32 1.06x, with
float32 probabilities still within 1.2e-6 of the fused graph's. Parity (parity.json) is measured as served."""
SAMPLE_TEXTS = ["what a day", "I can't believe it worked, thank you all so much!"]
"""Two texts of different lengths: the traced batch has padding, so the graph's mask handling is traced too."""


def is_onnx_dir(path: Path) -> bool:
    """Whether `path` holds an ONNX export (an export.json that names an ONNX graph)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("export_format") == "onnx"


def precision_of(quantize: str | None) -> str:
    return quantize or "float32"


def export(run_dir: Path, out_dir: Path, quantize: str | None = None, accept_drift: bool = False,
           name: str | None = None, notify=print) -> dict:
    """Export the finished run `run_dir` to ONNX in `out_dir` (refused if it exists); its parity (also in
    `out_dir`/parity.json). UsageError, with nothing written, when the export misses TOLERANCES and not
    `accept_drift`, or when the architecture does not export."""
    from emodist import data
    from emodist.serve import export as hf_export

    if quantize not in (None, *QUANTIZATIONS):
        raise UsageError(f"--quantize {quantize}: not a quantization emodist exports: use {', '.join(QUANTIZATIONS)}")
    summary, cfg = hf_export.finished_run(run_dir)
    if out_dir.exists():
        raise UsageError(f"{out_dir} exists: choose a new --output (nothing is overwritten)")
    _check_runtime()
    if cfg.data.data_dir is not None and not Path(cfg.data.data_dir).is_dir():  # detect() would call it no layout
        raise DataError(f"{cfg.data.data_dir}: the run's data (data.data_dir) is not there (moved or deleted?), and an "
                        "ONNX export measures itself on its test split: put the data back, or export without --onnx")
    test = data.load(cfg.data, seed=cfg.train.seed).splits["test"]  # before the export: a missing data set stops it
    model, tokenizer = hf_export.merged_model(summary, run_dir / "model", cfg.data.max_length, "float32")
    model = model.float().eval()
    with hf_export.staged(out_dir) as tmp:
        notify(f"exporting {run_dir} to ONNX ({precision_of(quantize)})")
        write(model, tokenizer, tmp, quantize, f"variant {summary['variant']}", cfg.data.max_length)
        shutil.copy2(run_dir / "model" / "thresholds.json", tmp / "thresholds.json")
        notify("measuring its parity on the test split")
        result = measure_parity(model, tokenizer, tmp, test, cfg.data.max_length, precision_of(quantize))
        (tmp / PARITY).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        title = name or hf_export.run_name(run_dir)  # as the safetensors export's card: the hub repository, else the run
        card = model_card(summary, cfg, title, use=_use(title), merged_in="float32", adapter_kept=False, onnx=result)
        (tmp / "README.md").write_text(card + parity_section(result), encoding="utf-8")
        if not result["passed"] and not accept_drift:
            raise UsageError(f"the {precision_of(quantize)} ONNX export misses its tolerances on the test split "
                             f"({'; '.join(result['failures'])}): nothing was written; --accept-drift keeps it anyway")
    return result


def _check_runtime() -> None:
    """UsageError naming what to install when the ONNX packages are missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"--onnx needs {', '.join(missing)}: pip install -e \".[onnx]\" (or pip install "
                         f"{' '.join(missing)})")


def write(model, tokenizer, directory: Path, quantize: str | None = None, what: str = "this model",
          max_length: int | None = None) -> None:
    """Write the torch `model` (float32, eval mode) to `directory` as an ONNX export Classifier.load serves:
    transformers' ONNX export (dynamic shapes), int8-quantized by ONNX Runtime if asked, with the tokenizer.
    UsageError, naming `what`, when the exporter cannot export the model."""
    _check_runtime()
    from torch.export import Dim
    from transformers.exporters import (
        OnnxConfig,
        OnnxExporter,
        OnnxRuntimeDynamicConfig,
        OnnxRuntimeQuantizer,
    )

    from emodist.serve.model_dir import save_tokenizer

    inputs = dict(tokenizer(SAMPLE_TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False))
    quantizer = OnnxRuntimeQuantizer(OnnxRuntimeDynamicConfig(**INT8)) if quantize == "int8" else None
    dynamic = {name: {0: Dim.DYNAMIC, 1: Dim.DYNAMIC} for name in inputs}  # batch size and length vary
    settings = OnnxConfig(dynamic_shapes=dynamic, quantizer=quantizer, opset_version=OPSETS.get(model.config.model_type))
    try:
        with _quiet_exporter():
            exported = OnnxExporter().export(model, inputs, settings)
    except Exception as err:  # noqa: BLE001 - torch.export and torch.onnx raise many kinds
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UsageError(f"{what}: transformers' ONNX exporter cannot export {type(model).__name__} "
                         f"({type(err).__name__}: {first}); serve the safetensors export (launch/export.py without "
                         "--onnx) instead") from None
    exported.save_pretrained(directory)
    save_tokenizer(tokenizer, directory, max_length or tokenizer.model_max_length, input_names=list(inputs))
    if settings.opset_version is not None:  # an encoder: its attention is ONNX Attention ops
        onnx_graph.attention_3d(graph_file(directory), model.config.num_attention_heads)


def graph_file(directory: Path) -> Path:
    """The ONNX graph of the export in `directory`, as its export.json names it."""
    manifest = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    try:
        return Path(directory) / manifest["components"]["model"]["file"]
    except (KeyError, TypeError):
        raise UsageError(f"{Path(directory) / MANIFEST}: names no model graph (components.model.file): the export "
                         "is incomplete or was edited; export it again from its run directory") from None


@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx prints its stages and logs warnings about operators no emodist model uses (torchvision's,
    signatures it cannot infer), and ONNX Runtime's quantizer advises pre-processing: nothing a user of
    emodist can act on. Errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "")]  # "": onnxruntime's quantizer logs to root
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def measure_parity(model, tokenizer, onnx_dir: Path, test, max_length: int, precision: str) -> dict:
    """The export in `onnx_dir` against the torch `model` on the run's `test` split: see `parity`."""
    from emodist.serve.inference import Classifier

    served = Classifier.load(onnx_dir, max_length=max_length)
    reference = Classifier(model, tokenizer, served.cut, max_length=max_length)  # the same batches
    return parity(reference.probabilities(test.texts), served.probabilities(test.texts), test.targets,
                  served.cut, served.labels, precision)


def parity(reference: np.ndarray, probabilities: np.ndarray, targets: np.ndarray, cut: np.ndarray,
           labels: list[str], precision: str) -> dict:
    """How far `probabilities` (the export's) are from `reference` (the torch model's), and whether that is
    within TOLERANCES[precision]: passed, and failures (one phrase each) when not."""
    from emodist.scoring.metrics import multilabel_metrics

    diff = np.abs(probabilities.astype(np.float64) - reference.astype(np.float64))
    same = ((probabilities >= cut) == (reference >= cut)).all(axis=1)
    ours = multilabel_metrics(targets, probabilities, labels, cut)
    theirs = multilabel_metrics(targets, reference, labels, cut)
    result = {
        "precision": precision, "examples": len(reference),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0, "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "label_agreement": float(same.mean()) if len(same) else 1.0,
        "f1_micro": {"torch": theirs["f1_micro"], "onnx": ours["f1_micro"]},
        "f1_macro": {"torch": theirs["f1_macro"], "onnx": ours["f1_macro"]},
        "tolerances": TOLERANCES[precision],
    }
    limits = TOLERANCES[precision]
    failures = [] if np.isfinite(diff).all() else [f"{int((~np.isfinite(diff)).sum())} probabilities are not numbers"]
    if "max_abs_diff" in limits and result["max_abs_diff"] > limits["max_abs_diff"]:
        failures.append(f"largest probability difference {result['max_abs_diff']:.2e} > {limits['max_abs_diff']:.0e}")
    if "label_agreement" in limits and result["label_agreement"] < limits["label_agreement"]:
        failures.append(f"the same labels for {result['label_agreement']:.2%} of the texts < "
                        f"{limits['label_agreement']:.0%}")
    gap = abs(ours["f1_macro"] - theirs["f1_macro"])
    if "f1_macro_gap" in limits and gap > limits["f1_macro_gap"]:
        failures.append(f"macro-F1 {ours['f1_macro']:.4f} vs {theirs['f1_macro']:.4f}, {gap:.4f} apart > "
                        f"{limits['f1_macro_gap']}")
    return {**result, "passed": not failures, "failures": failures}


def summary_line(result: dict) -> str:
    """An export's parity (`parity`'s result) in one line, for the terminal."""
    f1 = result["f1_macro"]
    return (f"parity on {result['examples']} test texts: largest probability difference {result['max_abs_diff']:.1e}, "
            f"the same labels for {result['label_agreement']:.2%}, macro-F1 {f1['onnx']:.4f} (torch {f1['torch']:.4f})"
            + ("" if result["passed"] else f"; outside the tolerances, kept (--accept-drift): {'; '.join(result['failures'])}"))


def _use(name: str) -> str:
    """The model card's Use section for an ONNX export."""
    local = local_path(name)
    return f"""## Use

With emodist, {local_copy(name)}:

```bash
python launch/predict.py {local} "I can't believe it worked!"   # emodist serves it with ONNX Runtime
```

```python
from emodist.serve.inference import Classifier

classifier = Classifier.load("{local}")   # ONNX Runtime, the tuned thresholds of thresholds.json
classifier.predict(["I can't believe it worked!"])
```

`model.onnx` takes `input_ids` and `attention_mask` (int64, batch x length, any sizes) and returns `logits`
(batch x labels); a label's probability is the sigmoid of its logit, and config.json maps ids to labels."""


def parity_section(result: dict) -> str:
    """The model card's ONNX section: what the export was measured to change, on the test split."""
    f1 = {k: result[k] for k in ("f1_micro", "f1_macro")}
    verdict = "within" if result["passed"] else "**outside** (kept with --accept-drift)"
    return f"""

## ONNX export ({result['precision']})

Measured against the torch model it was exported from, on the {result['examples']} test texts, at the tuned
thresholds; {verdict} emodist's tolerances ({', '.join(f'{k} {v}' for k, v in result['tolerances'].items())}):

| | torch | ONNX |
|---|---:|---:|
| F1 micro | {f1['f1_micro']['torch']:.4f} | {f1['f1_micro']['onnx']:.4f} |
| F1 macro | {f1['f1_macro']['torch']:.4f} | {f1['f1_macro']['onnx']:.4f} |

Largest probability difference {result['max_abs_diff']:.2e} (mean {result['mean_abs_diff']:.2e}); the same
labels for {result['label_agreement']:.2%} of the texts. parity.json holds these numbers.
"""


def load(directory: Path, device="cpu"):
    """(OnnxModel, tokenizer) of the ONNX export in `directory`; UsageError when it does not load."""
    from emodist.models.builder import load_tokenizer

    _check_runtime()
    graph = graph_file(directory)
    if not graph.is_file():  # else ONNX Runtime's loader names it as a hub URL
        raise UsageError(f"{directory}: {graph.name}, the graph its {MANIFEST} names, is missing: the export is "
                         "incomplete; export it again from its run directory (launch/export.py RUN --onnx)")
    try:
        return OnnxModel.load(directory, device), load_tokenizer(str(directory), setting=None)
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception classes
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"{directory}: the ONNX export there does not load ({type(err).__name__}: {first}): it may "
                         "be incomplete or corrupted; export it again from its run directory") from None


class OnnxModel:
    """An ONNX export run by ONNX Runtime, called as the torch model is: `model(input_ids=..., attention_mask=...)`
    returns an object whose `.logits` is a float32 torch tensor."""

    def __init__(self, exported, config):
        self.exported = exported
        self.config = config

    @classmethod
    def load(cls, directory: Path, device="cpu") -> OnnxModel:
        import onnxruntime
        import torch
        from transformers import AutoConfig
        from transformers.exporters import ExportedModel

        options = {}
        if torch.device(device).type == "cpu":
            options["session_options"] = onnxruntime.SessionOptions()
            for key, value in CPU_SESSION_CONFIG.items():
                options["session_options"].add_session_config_entry(key, value)
        exported = ExportedModel.from_pretrained(str(directory), device=device, **options)
        return cls(exported, AutoConfig.from_pretrained(directory))

    @property
    def device(self):
        return self.exported.device

    def eval(self) -> OnnxModel:
        return self

    def __call__(self, **batch):
        import torch

        out = self.exported(**batch)
        logits = out["logits"] if isinstance(out, dict) else getattr(out, "logits", out)
        return SimpleNamespace(logits=torch.as_tensor(logits, dtype=torch.float32))
