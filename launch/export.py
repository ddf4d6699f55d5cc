"""A finished run's model as a standalone HF model directory (model card included), optionally on the hub.

    python launch/export.py runs/<run>                         # -> runs/<run>/export
    python launch/export.py runs/<run> --output exports/emo --push-to-hub me/emotions --private
    python launch/export.py runs/<run> --push-to-hub me/emotions --dry-run      # list what would be sent
    python launch/export.py runs/<run> --onnx [--quantize int8]         # -> runs/<run>/export-onnx[-int8]

The directory loads with `transformers.pipeline("text-classification", model=DIR, top_k=None)` and with
`launch/predict.py DIR`; LoRA adapters are merged into their base (see emodist/serve/export.py). The upload
(huggingface_hub create_repo + upload_folder) takes its token from HF_TOKEN or the one `hf auth login`
saved; without one it is refused in one line before the export is written, offline before anything is sent.

`--onnx` writes the same model as ONNX instead (float32, or int8 with `--quantize int8`: ONNX Runtime's
dynamic quantization), which `launch/predict.py` and `Classifier.load` serve with ONNX Runtime. Every ONNX
export scores the run's test split beside the torch model it came from and writes what changed to
parity.json and its model card; one that misses emodist's tolerances (float32: probabilities within 1e-4;
int8: the same labels for 99% of the texts, macro-F1 within 0.005) is not kept unless `--accept-drift`
(see emodist/serve/onnx_export.py). Exit codes: 0 done, 2 refused (one line says why), 65 the run's data
(which an ONNX export's parity reads) cannot be read, 130 stopped (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emodist.runtime import errors, hub, process, signals


def main(argv: list[str] | None = None) -> int:
    process.before_torch()  # a QLoRA merge computes on the CPU: OpenMP's idle threads must sleep
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished run directory (summary.json, model/)")
    parser.add_argument("--output", type=Path, help="the export directory (default RUN_DIR/export; must not exist, but for "
                        "--push-to-hub, which pushes an export there as it is)")
    parser.add_argument("--max-shard-size", help="largest safetensors shard (default: the run's export.max_shard_size)")
    parser.add_argument("--merge-dtype", choices=("float32", "bfloat16"),
                        help="dtype an adapter is merged in (default: float32 for LoRA, bfloat16 for QLoRA)")
    parser.add_argument("--onnx", action="store_true",
                        help="export as ONNX, its parity with the torch model measured on the run's test split")
    parser.add_argument("--quantize", choices=("int8",), help="with --onnx: int8 (ONNX Runtime dynamic quantization)")
    parser.add_argument("--accept-drift", action="store_true",
                        help="with --onnx: keep an export that misses its parity tolerances")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the export to this hub repository")
    parser.add_argument("--private", action="store_true", help="create the hub repository private")
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: list the files, send nothing")
    args = parser.parse_args(argv)
    signals.interrupt_on_sigterm()  # what a stop leaves half done is undone, as for a Ctrl-C
    return errors.run_main(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    if hub.needed_by_export(args.run_dir / "model"):  # the merge loads the adapter's base: probe before
        hub.go_offline_if_unreachable()               # huggingface_hub is imported, which reads it once
    from emodist.serve import export, onnx_export

    export.check_flags(args)
    if args.push_to_hub:
        export.check_repo_id(args.push_to_hub)
        if not args.dry_run:
            export.check_token(args.push_to_hub)
    process.quiet_libraries()
    default = "export-onnx" + (f"-{args.quantize}" if args.quantize else "") if args.onnx else "export"
    out_dir = args.output or args.run_dir / default
    export.check_output(args.run_dir, out_dir, args.run_dir / default)
    if not (args.push_to_hub and (out_dir / "README.md").is_file()):  # an export to push is pushed as it is
        name = args.push_to_hub or args.run_dir.name
        if args.onnx:
            print(onnx_export.summary_line(onnx_export.export(args.run_dir, out_dir, args.quantize,
                                                              accept_drift=args.accept_drift, name=name)))
        else:
            export.export(args.run_dir, out_dir, args.max_shard_size, name=name, merge_dtype=args.merge_dtype)
        print(f"exported {args.run_dir} to {out_dir}")
    else:
        export.check_pushable(out_dir, args.run_dir, args.onnx, {"--merge-dtype": args.merge_dtype,
                                                                 "--max-shard-size": args.max_shard_size}, args.quantize)
    if args.push_to_hub:
        files = export.push(out_dir, args.push_to_hub, private=args.private, dry_run=args.dry_run)
        verb = "would upload" if args.dry_run else "uploaded"
        print(f"{verb} to {args.push_to_hub}{' (private)' if args.private else ''}: " + ", ".join(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
