"""Which int8 scheme would keep a model's labels: simulated quantization of every linear layer (issue 23).

    python bench/int8_schemes.py MODEL_DIR [--data-dir DIR] [--schemes W:A[:ALPHA],...]

Issue 23 asks an int8 export to give the same label sets as the float32 model for >= 99% of the test texts,
at the run's tuned thresholds. ONNX Runtime's dynamic int8 (what `launch/export.py --quantize int8` writes)
quantizes weights per output channel and each MatMul's activations per tensor, as uint8 over the whole
batch. This script asks what finer schemes would give, without building their kernels: each nn.Linear of the
torch model is replaced by one that rounds its weights and its input to the scheme's int8 grid and back
(float32 compute on the rounded values, the error a real int8 kernel makes), and the test split is scored
in float32 as `Classifier` serves it (batches of 64, sorted by length, so padding barely enters a scale).

Schemes are `WEIGHTS:ACTIVATIONS[:ALPHA]`:
- weights: `fp` (left as they are), `channel` (symmetric int8 per output channel, ONNX Runtime's
  per_channel), `block32` (symmetric int8 per 32 inputs of each output, MatMulNBits' finest block);
- activations: `fp`, `tensor` (asymmetric uint8 over the whole tensor: ONNX Runtime's
  DynamicQuantizeLinear), `token` (asymmetric uint8 per token row);
- ALPHA: SmoothQuant (Xiao et al., 2023): each input channel j of a layer divided by
  s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha) and its weight column multiplied by it (exact in float),
  the activation maxima read from `--calibration` train texts. It moves activation outliers into weights.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
DEFAULT_DATA = Path(os.environ.get("EMODIST_GOEMOTIONS", ROOT.parent / "shared" / "data" / "goemotions"))

WEIGHTS = ("fp", "channel", "block32")
ACTIVATIONS = ("fp", "tensor", "token")
DEFAULT = ("channel:tensor", "channel:fp", "fp:tensor", "fp:token", "channel:token", "fp:token:0.5",
           "channel:token:0.5", "block32:fp")


def parse_schemes(text: str) -> list[str]:
    """The schemes of `--schemes`, each WEIGHTS:ACTIVATIONS[:ALPHA] (see the module's text); UsageError naming
    the first that is not."""
    from emodist.runtime.errors import UsageError

    schemes = text.split(",")
    for scheme in schemes:
        where = f"--schemes {text}: " + (f"scheme {scheme!r}: " if len(schemes) > 1 else "")
        parts = scheme.split(":")
        if len(parts) not in (2, 3):
            raise UsageError(f"{where}not WEIGHTS:ACTIVATIONS[:ALPHA]: write e.g. channel:token or fp:token:0.5 "
                             "(several separated by commas)")
        weights, activations, *alpha = parts
        if weights not in WEIGHTS:
            raise UsageError(f"{where}weights {weights!r}: use one of {', '.join(WEIGHTS)}")
        if activations not in ACTIVATIONS:
            raise UsageError(f"{where}activations {activations!r}: use one of {', '.join(ACTIVATIONS)}")
        try:
            ok = not alpha or 0 <= float(alpha[0]) <= 1
        except ValueError:
            ok = False
        if not ok:
            raise UsageError(f"{where}ALPHA {alpha[0]!r}: use a number from 0 to 1 (SmoothQuant's alpha, e.g. 0.5)")
    return schemes


def round_weights(w: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "fp":
        return w
    rows = w if mode == "channel" else w.reshape(w.shape[0], -1, 32)
    scale = rows.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127
    return (torch.round(rows / scale).clamp(-127, 127) * scale).reshape(w.shape)


def round_activations(x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "fp":
        return x
    dims = None if mode == "tensor" else (-1,)
    lo = (x.amin() if dims is None else x.amin(dims, keepdim=True)).clamp(max=0)
    hi = (x.amax() if dims is None else x.amax(dims, keepdim=True)).clamp(min=0)
    scale = ((hi - lo) / 255).clamp(min=1e-12)
    zero = torch.round(-lo / scale)
    return (torch.round(x / scale + zero).clamp(0, 255) - zero) * scale


class Rounded(torch.nn.Module):
    """`linear` computing on int8-rounded weights and inputs (after the SmoothQuant scales, if any)."""

    def __init__(self, linear: torch.nn.Linear, weights: str, activations: str, smooth: torch.Tensor | None):
        super().__init__()
        w = linear.weight.data if smooth is None else linear.weight.data * smooth
        self.weight = torch.nn.Parameter(round_weights(w, weights), requires_grad=False)
        self.bias, self.activations, self.smooth = linear.bias, activations, smooth

    def forward(self, x):
        x = x if self.smooth is None else x / self.smooth
        return torch.nn.functional.linear(round_activations(x, self.activations), self.weight, self.bias)


def input_maxima(classifier, texts) -> dict[str, torch.Tensor]:
    """Each linear layer's largest |input| per channel over `texts`."""
    maxima: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(_module, inputs):
            seen = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
            maxima[name] = torch.maximum(maxima[name], seen) if name in maxima else seen
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in classifier.model.named_modules()
             if isinstance(m, torch.nn.Linear)]
    classifier.probabilities(texts)
    for hook in hooks:
        hook.remove()
    return maxima


def rounded_model(model, scheme: str, maxima: dict[str, torch.Tensor]):
    weights, activations, *alpha = scheme.split(":")
    model = copy.deepcopy(model)
    for name, linear in [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]:
        smooth = None
        if alpha:
            a = float(alpha[0])
            column = linear.weight.data.abs().amax(0).clamp(min=1e-5)
            smooth = (maxima[name].clamp(min=1e-5) ** a / column ** (1 - a)).clamp(min=1e-5)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, Rounded(linear, weights, activations, smooth))
    return model


def check_blocks(model, schemes: list[str]) -> None:
    """UsageError when a block32 scheme meets a linear layer whose inputs are not a multiple of 32."""
    from emodist.runtime.errors import UsageError

    blocked = [scheme for scheme in schemes if scheme.startswith("block32:")]
    odd = next(((n, m.in_features) for n, m in model.named_modules()
                if isinstance(m, torch.nn.Linear) and m.in_features % 32), None)
    if blocked and odd:
        raise UsageError(f"--schemes {blocked[0]}: this model's layer {odd[0]} has {odd[1]} inputs, not a multiple of "
                         "32: block32 does not apply to it; leave it out, or use channel")


def texts_of(data_dir: Path, split: str) -> list[str]:
    with open(data_dir / f"{split}.tsv", encoding="utf-8") as rows:
        return [line.split("\t")[0] for line in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="GoEmotions in its original layout")
    parser.add_argument("--schemes", default=",".join(DEFAULT))
    parser.add_argument("--calibration", type=int, default=1024, help="train texts SmoothQuant's maxima are read on")
    args = parser.parse_args(argv)
    from emodist.runtime import errors

    return errors.run_main(lambda: run(args))


def torch_model(path: Path) -> Path:
    """The torch model directory `path` names (a model/ directory, or a run directory holding one); UsageError
    for no model, or an ONNX export (its layers are not torch's to round)."""
    from emodist.runtime.errors import UsageError
    from emodist.serve import onnx_export
    from emodist.serve.inference import model_dir_of

    if onnx_export.is_onnx_dir(path):
        raise UsageError(f"{path}: an ONNX export; the schemes are simulated on the torch model: pass the run's "
                         "model/ directory, or the run directory")
    return model_dir_of(path)


def run(args: argparse.Namespace) -> int:
    import checks

    schemes = parse_schemes(args.schemes)
    checks.at_least(1, ("--calibration", args.calibration))
    model_dir = torch_model(args.model_dir)
    checks.goemotions(args.data_dir, ("test", "train"))
    from emodist.serve.inference import Classifier

    classifier = Classifier.load(model_dir, precision="fp32")
    check_blocks(classifier.model, schemes)
    test = texts_of(args.data_dir, "test")
    reference = classifier.probabilities(test)
    labels = reference >= classifier.cut
    maxima = input_maxima(classifier, texts_of(args.data_dir, "train")[:args.calibration])
    model = classifier.model
    print(f"{len(test)} test texts, {args.model_dir}, thresholds {'tuned' if classifier.tuned else '0.5'}")
    print("| weights:activations[:alpha] | same label sets | largest / mean probability difference | seconds |")
    print("|---|---:|---:|---:|")
    for scheme in schemes:
        classifier.model = rounded_model(model, scheme, maxima)
        start = time.perf_counter()
        probabilities = classifier.probabilities(test)
        same = (probabilities >= classifier.cut) == labels
        gap = np.abs(probabilities - reference)
        print(f"| {scheme} | {same.all(axis=1).mean():.2%} | {gap.max():.3f} / {gap.mean():.5f} | "
              f"{time.perf_counter() - start:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
