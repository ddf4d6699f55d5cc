"""Label new text with a trained model: its tuned thresholds, every label's score, JSON lines or CSV.

    python launch/predict.py runs/<run>/model "I can't believe it worked!" "ugh, again?"
    python launch/predict.py runs/<run>/model --file texts.txt            # one text per line
    python launch/predict.py runs/<run>/model --file posts.csv --column body --format csv --output out.csv
    echo "I can't believe you did that" | python launch/predict.py runs/<run>        # a run directory works too

MODEL is an exported model/ directory (a full model, or a LoRA/QLoRA adapter whose base is loaded from
the path or hub id its adapter_config.json names), a run directory holding one, or an ONNX export
(`launch/export.py RUN --onnx`), which ONNX Runtime serves with the same output. Texts come from the
arguments, --file (.csv/.jsonl: the --column field; any other file: one per line) or standard input.
Empty lines are skipped and counted; texts longer than --max-length tokens (by default the run's
data.max_length, the length it was trained and its thresholds tuned at) are read up to it, with a notice. Output is written and flushed chunk by chunk, so a stop keeps what was done. --precision auto (the
default) runs a torch model under bf16 autocast where the hardware computes in bf16 (Ampere or newer GPUs, CPUs with
AVX512-BF16 or AMX: 1.7-2.0x float32's speed on such a CPU, the same labels for 99.7% of GoEmotions'
test texts, bench/RESULTS.md); --precision fp32 gives the float32 probabilities. Exit codes: 0 done, 2 refused (one
line says why), 130 stopped (Ctrl-C, SIGTERM: the output keeps its whole records).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emodist.runtime import errors, hub, process, signals


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model/ directory (or a run directory holding one)")
    parser.add_argument("texts", nargs="*", help="texts to label (default: --file, else standard input)")
    parser.add_argument("--file", help="a .txt (one text per line), .csv or .jsonl file; - for standard input")
    parser.add_argument("--column", help="the text column (.csv) or field (.jsonl); default text")
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="output format (default jsonl)")
    parser.add_argument("--output", help="write here instead of standard output (an existing file is refused)")
    parser.add_argument("--top-k", type=int, default=0, metavar="K", help="also list the K best-scoring labels")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    parser.add_argument("--max-length", type=int, help="tokens read per text (default: the run's data.max_length, "
                        "the length it trained at)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu", help="cpu, cuda, cuda:1 (default: a GPU if any)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="bf16 autocast where the device computes in bf16 (auto, the default), always, or never")
    return parser.parse_intermixed_args(argv)  # texts may come after the options, too


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    process.before_torch()  # OpenMP's idle threads must not stall the batches of a busy machine
    args = parse_args(argv)
    signals.interrupt_on_sigterm()  # what a stop leaves half done is undone, as for a Ctrl-C
    return errors.run_main(lambda: predict(args))


def predict(args: argparse.Namespace) -> int:
    if args.file and args.texts:
        raise errors.UsageError("texts given both as arguments and with --file: choose one")
    for flag, value, least in (("--top-k", args.top_k, 0), ("--batch-size", args.batch_size, 1),
                               ("--max-length", args.max_length, 8)):
        if value is not None and value < least:
            raise errors.UsageError(f"{flag} {value}: must be >= {least}")
    from emodist.scoring import thresholds
    from emodist.serve import textio
    from emodist.serve.inference import Classifier, device_of, model_dir_of

    model_dir = model_dir_of(Path(args.model))
    if hub.needed_by_export(model_dir):  # before huggingface_hub is imported, which reads it once
        hub.go_offline_if_unreachable()
    process.quiet_libraries()  # imports transformers, and with it huggingface_hub: after the probe
    device = device_of(args.device)
    inputs = textio.texts_of(args.texts, args.file, args.column)
    classifier = Classifier.load(model_dir, device, max_length=args.max_length, batch_size=args.batch_size,
                                 precision=args.precision, length_name="--max-length")
    if classifier.warning:
        print(f"emodist: warning: {classifier.warning}", file=sys.stderr)
    if args.top_k > len(classifier.labels):
        raise errors.UsageError(f"--top-k {args.top_k}: this model has {len(classifier.labels)} labels: use "
                                f"--top-k {len(classifier.labels)} or less")
    if not classifier.tuned:
        print(f"emodist: {model_dir} has no {thresholds.FILE}: every label is chosen at probability 0.5 (a run "
              "writes the thresholds it tuned on dev there)", file=sys.stderr)
    textio.check_format(classifier.labels, args.format, args.top_k)  # before --output is made
    writer = textio.Writer(textio.open_output(args.output), classifier.labels, args.format, args.top_k)
    textio.write_predictions(classifier, inputs, writer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
