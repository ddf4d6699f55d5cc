"""A run's model as a standalone HF model directory, with a model card, and its upload to the hub.

    out = export.export(Path("runs/<run>"), Path("runs/<run>/export"))   # loads with pipeline(...)
    export.push(out, "me/emotions", private=True, dry_run=False)

The directory holds a full model in sharded safetensors: a full fine-tune as trained; a LoRA adapter
merged into its base (`merge_and_unload`) in float32, so the merge rounds nothing and the model scores
the same in any batching (a bfloat16 merge, `merge_dtype="bfloat16"`, halves the size; its scores move
by ~1e-3 with the padding of a batch); a QLoRA adapter merged into its base loaded unquantized in
bfloat16 (the 4-bit rounding the adapter trained against is gone: scores move by ~0.003 on average,
tests/test_export.py), with the adapter itself kept in `adapter/`. Beside it: the tokenizer, `thresholds.json`, and a
model card (`README.md`, emodist.serve.card) whose model-index metadata carries the run's test scores.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from emodist.runtime import files
from emodist.runtime.errors import NoSpace, UsageError, format_bytes, free_bytes, out_of_space
from emodist.serve.card import model_card


def export(run_dir: Path, out_dir: Path, max_shard_size: str | None = None, name: str | None = None,
           merge_dtype: str | None = None) -> Path:
    """Write the standalone model of the finished run `run_dir` to `out_dir` (refused if it exists); `name`
    (the card's title and model-index name): the hub repository, else the run's directory name;
    `merge_dtype`: the dtype an adapter is merged in (default float32 for LoRA, bfloat16 for QLoRA)."""
    summary, cfg = finished_run(run_dir)
    model_dir = run_dir / "model"
    if out_dir.exists():
        raise UsageError(f"{out_dir} exists: choose a new --output (nothing is overwritten)")
    card = model_card(summary, cfg, name or run_name(run_dir), merged_in=merge_dtype)
    with staged(out_dir) as tmp:
        _write(summary, cfg, model_dir, tmp, card, max_shard_size, merge_dtype)
    return out_dir


def run_name(run_dir: Path) -> str:
    """What a card calls the run: its directory's name as the user wrote the path (`.` too; a link's own name)."""
    return Path(os.path.abspath(run_dir)).name


@contextlib.contextmanager
def staged(out_dir: Path):
    """A fresh directory beside `out_dir`, of this export alone, to write the export into; renamed to `out_dir`
    when the block ends, removed if it raises. Nothing else beside it is touched: not another launch's
    directory, nor one emodist never wrote. UsageError if `out_dir` appeared meanwhile."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        files.open_to_umask(tmp)  # safetensors writes -rw-------: the export is shared as the umask allows
        try:
            tmp.rename(out_dir)
        except OSError:
            if out_dir.exists():
                raise UsageError(f"{out_dir} appeared while exporting (another launch?): choose a new --output "
                                 "(nothing is overwritten)") from None
            raise
    except BaseException as err:
        full = isinstance(err, Exception) and not isinstance(err, UsageError) and out_of_space(err, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:  # the writers' own errors name no path (safetensors, tokenizers, onnx), or a temporary one
            free = format_bytes(free_bytes(tmp.parent))
            raise NoSpace(f"no space left on the disk of {out_dir.parent} for the export: {free} free there once its "
                          "partial files were removed; free some space, or choose another --output, then run "
                          "again") from None
        raise


REWRITTEN = ("model", "model.tmp", "checkpoints", "smoke-base", "wandb")
"""What training writes over in a run directory: a finish (model/, model.tmp/), every save, a restart."""


def check_output(run_dir: Path, out_dir: Path, default: Path) -> None:
    """UsageError when `out_dir` lies inside a directory of this run or of another one that training rewrites
    (REWRITTEN): an export there would be lost in it."""
    from emodist.rundir.contract import MARKER

    out, own = out_dir.resolve(), run_dir.resolve()
    if own.name == "model" and (own.parent / MARKER).is_file():
        return  # a run's model/ named as the run: finished_run says which directory to name
    for managed in (out, *out.parents):
        run = managed.parent
        if managed.name in REWRITTEN and (run == own or (run / MARKER).is_file()):
            whose = "the run's" if run == own else f"the run {run}'s"
            raise UsageError(f"--output {out_dir}: inside {whose} {managed.name}/, which training rewrites: choose "
                             f"a path outside it (default {default})")


def finished_run(run_dir: Path) -> tuple[dict, object]:
    """(summary, config) of the finished run in `run_dir`; UsageError saying what is missing or broken."""
    from emodist import config
    from emodist.report import compare
    from emodist.scoring import thresholds

    summary_file, model_dir = run_dir / "summary.json", run_dir / "model"
    missing = [name for name, there in (("summary.json", summary_file.is_file()), ("config.yaml", (run_dir / "config.yaml").is_file()),
                                        ("model/config.json", (model_dir / "config.json").is_file()),
                                        ("model/thresholds.json", (model_dir / "thresholds.json").is_file())) if not there]
    if missing:
        from emodist.serve.inference import unfinished_run

        if run_dir.name == "model" and (run_dir.parent / "summary.json").is_file():
            raise UsageError(f"{run_dir}: the model of a run: export the run directory, {run_dir.parent}")
        if unfinished := unfinished_run(run_dir):
            raise UsageError(f"{unfinished}, then export it")
        raise UsageError(f"{run_dir}: not a finished run (no {', '.join(missing)}): export a run that ended")
    try:
        content = json.loads(summary_file.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UsageError(f"{summary_file}: not valid JSON ({err}): export a run that ended") from None
    summary = compare.checked_summary(summary_file, content)  # its own one line for a summary of another shape
    fix = f"copy {run_dir / thresholds.FILE} over it (the run wrote both), then export again"
    thresholds.for_labels(thresholds.load(model_dir, fix), summary["labels"], model_dir / thresholds.FILE, fix)
    cfg = config.load(config_file=str(run_dir / "config.yaml"), data_here=False)  # moved data: the model exports
    try:
        model_card(summary, cfg, run_name(run_dir))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise UsageError(f"{summary_file}: it lacks what the model card needs ({type(err).__name__}: {err}): not a "
                         "summary emodist wrote (or edited since): export a run that ended") from None
    return summary, cfg


def _write(summary: dict, cfg, model_dir: Path, tmp: Path, card: str, max_shard_size: str | None,
           merge_dtype: str | None) -> None:
    if (model_dir / "adapter_config.json").is_file() and summary["quantization"] != "none":
        from emodist.serve.model_dir import model_files

        (tmp / "adapter").mkdir()  # the adapter as trained: its files alone, not a user's beside them in model/
        for name in model_files(p.name for p in model_dir.iterdir() if p.is_file()):
            shutil.copy2(model_dir / name, tmp / "adapter" / name)
    from emodist.serve.model_dir import save_tokenizer

    model, tokenizer = merged_model(summary, model_dir, cfg.data.max_length, merge_dtype)
    model.save_pretrained(tmp, max_shard_size=max_shard_size or cfg.export.max_shard_size)
    save_tokenizer(tokenizer, tmp, cfg.data.max_length)
    shutil.copy2(model_dir / "thresholds.json", tmp / "thresholds.json")
    (tmp / "README.md").write_text(card, encoding="utf-8")


def merged_model(summary: dict, model_dir: Path, max_length: int, merge_dtype: str | None = None):
    """(model, tokenizer) of the run's `model_dir` as one standalone model: a full fine-tune as trained; a
    LoRA adapter merged into its base in `merge_dtype` (default float32); a QLoRA adapter merged into its
    base loaded unquantized in `merge_dtype` (default bfloat16). The tokenizer's model_max_length is
    `max_length`, the run's data.max_length (a model/ saved before it carried it has the base's)."""
    from emodist import models
    from emodist.serve.model_dir import load_trained

    adapter = (model_dir / "adapter_config.json").is_file()
    if adapter and summary["quantization"] != "none":
        model, tokenizer = load_trained(model_dir, unquantized=models.DTYPES[merge_dtype or "bfloat16"])
        model = model.merge_and_unload()
    else:
        model, tokenizer = load_trained(model_dir)
        if adapter:
            model = model.to(models.DTYPES[merge_dtype or "float32"]).merge_and_unload()
    model.config.problem_type = "multi_label_classification"  # pipeline: a sigmoid per label
    tokenizer.model_max_length = max_length
    return model, tokenizer


def check_flags(args) -> None:
    """UsageError for launch/export.py flags that cannot go together or hold nothing (`args`: its parsed
    arguments), before any work."""
    from emodist.config import valid_shard_size

    if args.max_shard_size is not None and not valid_shard_size(args.max_shard_size):
        raise UsageError(f"--max-shard-size {args.max_shard_size}: not a size: write a whole number and KB, "
                         "MB, GB, KiB, MiB or GiB, e.g. 2GB")
    if args.push_to_hub is not None and not args.push_to_hub.strip():  # an empty variable in a script
        raise UsageError("--push-to-hub '': give the hub repository, e.g. --push-to-hub me/emotions")
    for flag, given, what in (("--dry-run", args.dry_run, "shows what --push-to-hub would upload"),
                              ("--private", args.private, "makes the repository --push-to-hub creates private")):
        if given and not args.push_to_hub:
            raise UsageError(f"{flag} {what}: add --push-to-hub REPO_ID")
    for flag, given in (("--quantize", args.quantize), ("--accept-drift", args.accept_drift)):
        if given and not args.onnx:
            raise UsageError(f"{flag} applies to ONNX exports: add --onnx")
    if args.onnx and (args.merge_dtype or args.max_shard_size):
        raise UsageError("--merge-dtype and --max-shard-size apply to the safetensors export: an ONNX export "
                         "is merged in float32 and written as one graph")


def check_repo_id(repo_id: str) -> None:
    """UsageError unless `repo_id` is a hub repository id (`name` or `namespace/name`), before any work."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UsageError(f"--push-to-hub {repo_id}: not a hub repository id ({str(err).splitlines()[0]}): use "
                         "NAME or NAMESPACE/NAME, e.g. me/emotions") from None


def check_token(repo_id: str) -> None:
    """UsageError when no hub token is set (HF_TOKEN, or the one `hf auth login` saved): checked before the
    export is written, so that a refused push leaves nothing behind."""
    from huggingface_hub import get_token

    try:
        token = get_token()
    except Exception as err:  # noqa: BLE001 - an OIDC exchange or a token refresh that failed
        raise UsageError(f"--push-to-hub {repo_id}: the hub token could not be read ({type(err).__name__}: "
                         f"{(str(err).splitlines() or [''])[0][:200]})") from None
    if not token:
        raise UsageError(f"--push-to-hub {repo_id}: no token: set HF_TOKEN (a write token from "
                         "huggingface.co/settings/tokens) or run `hf auth login`, or use --dry-run to see what would "
                         "be uploaded")


def check_pushable(out_dir: Path, run_dir: Path, onnx: bool = False, options: dict | None = None,
                   quantize: str | None = None) -> None:
    """UsageError unless the existing `out_dir` is an export of `run_dir` as the run is now: nothing in it but
    files and a QLoRA export's adapter/ (no other folder, no hidden file: a repository's .git, a home
    directory), and its thresholds.json the run's (an export of an earlier finish, or of another run, has
    others); and of the kind asked for (`onnx`, `quantize`), with none of the export `options` ({flag: value})
    given, which it would be pushed without."""
    from emodist.serve.onnx_export import PARITY, is_onnx_dir, precision_of

    asked = [flag for flag, value in (options or {}).items() if value]
    if onnx != is_onnx_dir(out_dir):
        asked.append("--onnx" if onnx else "no --onnx")
    elif onnx:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # an export without its parity: as before
            if json.loads((out_dir / PARITY).read_text(encoding="utf-8")).get("precision") != precision_of(quantize):
                asked.append(f"--quantize {quantize}" if quantize else "no --quantize")
    if asked:
        raise UsageError(f"{' and '.join(asked)}: {out_dir} exists and is pushed as it is, written otherwise: export "
                         "into a new --output with them, and push that")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.is_dir() and p.name != "adapter" or p.name.startswith("."))
    if foreign:
        raise UsageError(f"{out_dir}: holds {', '.join(foreign[:5])}, which no export does: --push-to-hub sends an "
                         f"export as it is, so only a directory launch/export.py wrote: export {run_dir} into a new "
                         "--output and push that")
    from emodist.scoring import thresholds

    ours = [thresholds.load(directory, "export it again") for directory in (out_dir, run_dir / "model")]
    if ours[0] != ours[1]:
        raise UsageError(f"{out_dir}: not an export of {run_dir} as it is now: its thresholds.json is not the run's "
                         "model/thresholds.json (an export of an earlier finish, or of another run): export the run "
                         "into a new --output and push that")


def push(out_dir: Path, repo_id: str, private: bool = False, dry_run: bool = False) -> list[str]:
    """Upload `out_dir` to the hub repository `repo_id` (created if needed); return the files. `dry_run`
    only lists them. Refused in one line, before anything is sent, without a token or with the hub
    unreachable."""
    from emodist.runtime import hub

    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    if dry_run:
        return files
    check_token(repo_id)
    if hub.go_offline_if_unreachable():
        raise UsageError(f"--push-to-hub {repo_id}: the HuggingFace hub is unreachable from here: push from a "
                         f"machine with network access (the export is complete in {out_dir})")
    from huggingface_hub import create_repo, upload_folder

    create_repo(repo_id, private=private, exist_ok=True)
    upload_folder(repo_id=repo_id, folder_path=str(out_dir), commit_message="emodist export")
    return files
