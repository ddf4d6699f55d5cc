"""The model card (README.md) of an export: the hub's model-index metadata with the run's test scores, how to
use the model, what it was trained on and how, its per-label thresholds, and its limits.

    card.model_card(summary, cfg, "me/emotions")   # summary.json and config.yaml of a finished run
"""

from __future__ import annotations

from pathlib import Path

import yaml

DATASETS = {"goemotions": "google-research-datasets/go_emotions", "semeval2018": "SemEvalWorkshop/sem_eval_2018_task_1"}
"""Hub ids of the data sets a card can name."""
QUANTIZED = {"nf4": "4-bit NF4", "int8": "8-bit"}
"""model.quantization in a card's words."""


def model_card(summary: dict, cfg, name: str, use: str | None = None, merged_in: str | None = None,
               adapter_kept: bool = True, onnx: dict | None = None) -> str:
    """README.md: model-index metadata (the run's test scores) and what the model is, does and does not;
    `use`: the Use section (default: loading it with transformers.pipeline); `merged_in`: the dtype a QLoRA
    adapter was merged into its base in (default bfloat16), `adapter_kept`: whether adapter/ is beside it;
    `onnx`: an ONNX export's parity (onnx_export.parity), whose own scores the metadata gives."""
    meta = _card_metadata(summary, name, cfg.data, onnx)
    test, tuned, dataset = summary["test"], summary["test_tuned"], summary["dataset"]
    thresholds = summary["thresholds"]["per_label"]
    rows = "\n".join(f"| {label} | {thresholds[label]:.4g} | {summary['test_tuned']['per_label'][label]['f1']:.4f} |"
                     for label in summary["labels"])
    method = _method(summary, merged_in or "bfloat16", adapter_kept)
    t, o = cfg.train, cfg.optim
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {name}

Multi-label emotion classifier: a text gets every label whose score reaches its threshold, so it can be
joyful and surprised at once. Trained with emodist from {_base(summary)}
({method}) on `{dataset}` ({len(summary['labels'])} labels).

{use or _pipeline_use(name)}

## Scores (test split, {test['num_examples']} examples{_scored(summary)})

| | F1 micro | F1 macro | exact match |
|---|---:|---:|---:|
| threshold 0.5 | {test['f1_micro']:.4f} | {test['f1_macro']:.4f} | {test['subset_accuracy']:.4f} |
| per-label thresholds tuned on dev | {tuned['f1_micro']:.4f} | {tuned['f1_macro']:.4f} | {tuned['subset_accuracy']:.4f} |

| label | threshold | test F1 (tuned) |
|---|---:|---:|
{rows}

## Training

variant `{summary['variant']}`; {_trained_on(summary, cfg)}; {_loss(t)}; global batch
{t.global_batch_size}, AdamW lr {o.lr} (head {o.head_lr or o.lr}), {o.schedule} schedule, warmup
{o.warmup_ratio:.0%}, weight decay {o.weight_decay}, max_length {cfg.data.max_length}, seed {t.seed};
{summary['num_processes']} process(es), {summary['mixed_precision']} mixed precision{_sessions(summary)}.

## Intended use and limits

For research on emotion in short English texts like those it was trained on. The scores are
probabilities of a model, not judgements about people: do not use them to decide about anyone. Rare
labels are learned from few examples and are the least reliable (see the per-label F1 above); texts
longer than {cfg.data.max_length} tokens are read up to that length; sarcasm, other languages and other
domains are not covered by the test scores.{_unlearned(summary)}
"""


def _pipeline_use(name: str) -> str:
    hub = "/" in name  # pushed: the card is read on the hub
    return f"""## Use

```python
import json
from pathlib import Path
from huggingface_hub import hf_hub_download
from transformers import pipeline

model = "{name if hub else "THIS_DIRECTORY"}"   # {"its hub repository, or a local copy of it" if hub else "the path of this export"}
classify = pipeline("text-classification", model=model, top_k=None)   # a sigmoid score per label
where = Path(model, "thresholds.json") if Path(model).is_dir() else hf_hub_download(model, "thresholds.json")
thresholds = json.loads(Path(where).read_text())["per_label"]          # tuned on the dev split
scores = classify(["I can't believe it worked!"], truncation=True)[0]  # reads as many tokens as training did
labels = [s["label"] for s in scores if s["score"] >= thresholds[s["label"]]]
```

With emodist, {local_copy(name)}:
`python launch/predict.py {local_path(name)} "I can't believe it worked!"`."""


def local_path(name: str) -> str:
    """The directory a card's commands name for the model `name`: a hub repository's last part, which
    `local_copy` fills; THIS_DIRECTORY for a run's name (an export not pushed: the path is the reader's)."""
    return name.rsplit("/", 1)[-1] if "/" in name else "THIS_DIRECTORY"


def local_copy(name: str) -> str:
    """How a card's reader gets the files `local_path` names."""
    return (f"on a local copy (`hf download {name} --local-dir {local_path(name)}`)" if "/" in name
            else "on this directory")


def _card_metadata(summary: dict, name: str, data, onnx: dict | None = None) -> dict:
    """The model card's YAML header: the hub's model-index with the test scores of the weights it is the card of
    (an ONNX export's own, which its parity measured), on what part of which data set."""
    test, tuned, dataset = summary["test"], summary["test_tuned"], summary["dataset"]
    if onnx is None:
        metrics = [{"type": "f1", "name": f"F1 {avg} (tuned thresholds)", "value": round(tuned[f"f1_{avg}"], 4)}
                   for avg in ("micro", "macro")]
        metrics += [{"type": "f1", "name": f"F1 {avg} (threshold 0.5)", "value": round(test[f"f1_{avg}"], 4)}
                    for avg in ("micro", "macro")]
        metrics += [{"type": "accuracy", "name": "exact match (tuned thresholds)", "value": round(tuned["subset_accuracy"], 4)}]
    else:  # not the torch model's: the hub shows these as this repository's results
        metrics = [{"type": "f1", "name": f"F1 {avg} (tuned thresholds, ONNX {onnx['precision']})",
                    "value": round(onnx[f"f1_{avg}"]["onnx"], 4)} for avg in ("micro", "macro")]
    linked = hub_dataset(dataset, data.grouping)
    where = {"type": linked or dataset, "name": dataset, **({"config": "simplified"} if linked == DATASETS["goemotions"] else {}),
             "split": "test"}
    args = {key: value for key, value in (("grouping", data.grouping if data.grouping != "none" else None),
                                          ("max_eval_examples", data.max_eval_examples)) if value is not None}
    return {
        "library_name": "onnx" if onnx else "transformers", "pipeline_tag": "text-classification",
        **({} if summary.get("smoke") else {"base_model": summary["base_model"]}),  # a smoke run's weights are random
        **({"datasets": [linked]} if linked else {}),
        "tags": ["emodist", "emotion", "multi-label-classification", summary["method"], *(["onnx"] if onnx else [])],
        "model-index": [{"name": name, "results": [{
            "task": {"type": "text-classification", "name": "Multi-label emotion classification"},
            "dataset": {**where, **({"args": args} if args else {})}, "metrics": metrics}]}],
    }


def _method(summary: dict, merged_in: str = "bfloat16", adapter_kept: bool = True) -> str:
    """How the exported weights were trained, in the card's words."""
    method = {"full": "every weight fine-tuned", "lora": "LoRA adapters merged into the base"}[summary["method"]]
    if summary["quantization"] != "none":
        quantization = summary["quantization"]
        method = (f"{'QLoRA' if quantization == 'nf4' else 'LoRA'} adapters trained on the {QUANTIZED[quantization]} "
                  f"base, merged here into the {merged_in} base" + ("; the adapter is in adapter/" if adapter_kept else ""))
    if summary["smoke"]:
        data = " on synthetic data" if summary["dataset"] == "synthetic" else ""
        method += f"; a --smoke run: a tiny random model of that architecture{data}, a test artefact"
    return method


def _scored(summary: dict) -> str:
    """What the card's scores were measured on, where that is not the model it publishes."""
    quantization = summary["quantization"]
    if quantization != "none":
        return f"; measured on the {QUANTIZED[quantization]} model as trained, before the merge"
    last = str(summary.get("mixed_precision") or "no").split("+")[-1]  # the session that scored test
    return (f"; measured by the run in {last} mixed precision: computed in float32, as `pipeline` does, the scores "
            "can differ slightly") if last in ("bf16", "fp16") else ""


def _loss(train) -> str:
    """The training loss in the card's words: `BCE`, `focal loss (gamma 2.0)`, `asymmetric loss (...)`."""
    loss = {"bce": "BCE", "focal": f"focal loss (gamma {train.focal_gamma})",
            "asl": f"asymmetric loss (gamma+ {train.asl_gamma_pos}, gamma- {train.asl_gamma_neg}, clip {train.asl_clip})"}
    weights = f", positives weighted by label balance (at most {train.pos_weight_cap:g}x)" if train.pos_weight == "balanced" else ""
    return loss[train.loss] + weights


def hub_dataset(dataset: str, grouping: str = "none") -> str | None:
    """The hub id of the data set a run's summary names (`goemotions`; `goemotions-ekman`, its data.grouping=ekman),
    or None for a local one (a directory's name, e.g. `goemotions-de`), which the card names but does not link."""
    from emodist.data.grouping import GROUPINGS

    if grouping != "none":
        dataset = dataset.removesuffix(f"-{grouping if grouping in GROUPINGS else Path(grouping).stem}")
    return DATASETS.get(dataset)


def _plural(count: float, noun: str) -> str:
    shown = f"{count:,}" if isinstance(count, int) else (  # a few steps of a long epoch: 0.0047, not 0
        f"{count:.2g}" if 0 < abs(count) < 0.005 else f"{count:,.2f}".rstrip("0").rstrip("."))
    return f"{shown} {noun}" + ("" if shown == "1" else "s")


def _trained_on(summary: dict, cfg) -> str:
    """"1,200 steps (3 epochs) over 12,800 training examples (a seeded random subset ...)"."""
    train = summary["train"]
    examples = train.get("examples")
    subset = ""
    if cfg.data.max_train_examples is not None and examples is not None:
        subset = f" (a seeded random subset of the train split, data.max_train_examples={cfg.data.max_train_examples})"
    over = f" over {_plural(examples, 'training example')}{subset}" if examples is not None else ""
    return f"{_plural(train['steps'], 'step')} ({_plural(train['epochs'], 'epoch')}){over}"


def _sessions(summary: dict) -> str:
    sessions = summary.get("perf", {}).get("sessions") or 1
    return f", trained in {sessions} sessions (stopped and resumed, or trained further)" if sessions > 1 else ""


def _unlearned(summary: dict) -> str:
    from emodist.scoring import thresholds

    note = thresholds.warning(summary.get("thresholds") or {"per_label": {}})
    return f"\n\n**Warning from the dev scores:** {note}." if note else ""


def _base(summary: dict) -> str:
    """What the card says the model was trained from: a --smoke run's base is a tiny random model of the base's
    architecture, not its weights."""
    if summary.get("smoke"):
        return f"a tiny randomly initialised model of `{summary['base_model']}`'s architecture (`--smoke`: a test run)"
    return f"`{summary['base_model']}`"
