"""Checkpoint completeness and fingerprints, in this process, on checkpoints built by hand: what makes one
unusable (each fault named), which one `--resume auto` takes, and what a resume must share with it.

The end-to-end side (real checkpoints cut short, edited or corrupted under a real launch) is in
tests/test_rundir.py and tests/test_resume.py; these tests pin the verdicts themselves, message by message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emodist import config
from emodist.rundir import checkpoints
from emodist.rundir import fingerprint as fingerprints
from emodist.rundir.checkpoints import REQUIRED, STATE_FILE, latest_checkpoint, unusable
from emodist.rundir.fingerprint import check_resumable, differences, fingerprint, fingerprint_hash
from emodist.runtime.errors import UsageError

TOPOLOGY = {"num_processes": 2, "distributed_type": "MULTI_CPU", "zero_stage": None}


def make_checkpoint(run_dir: Path, step: int, **state) -> Path:
    """checkpoints/step-`step`/ as a save leaves it: two files, and state.json with their manifest and digest."""
    path = run_dir / "checkpoints" / f"step-{step}"
    (path / "sub").mkdir(parents=True)
    (path / "weights.bin").write_bytes(b"12345")
    (path / "sub" / "rng.pkl").write_bytes(bytes(range(40)))
    files = {name: checkpoints._describe_file(path / name) for name in ("weights.bin", "sub/rng.pkl")}
    content = {"step": step, "epoch": 0, "batches_in_epoch": step, "best": None, "loss_sum_per_rank": [1.0, 2.0],
               "loss_count": step, **TOPOLOGY, "fingerprint": {"model.lora.r": 8, "labels": ["joy"]}, "files": files,
               **state}
    write_state(path, content)
    return path


def write_state(path: Path, content: dict, digest: bool = True) -> None:
    if digest:
        content = {**content, "digest": checkpoints._digest(content)}
    (path / STATE_FILE).write_text(json.dumps(content))


def edit_state(path: Path, digest: bool = True, **changes) -> None:
    """Change state.json, then take its digest again (`digest`), or keep the one of the save."""
    content = json.loads((path / STATE_FILE).read_text())
    if digest:
        del content["digest"]
    write_state(path, {**content, **changes}, digest)


def test_a_complete_checkpoint_is_usable_and_its_state_reads_back(tmp_path):
    path = make_checkpoint(tmp_path, 20)
    assert unusable(path) is None
    state = checkpoints.read_state(path)
    assert state["step"] == 20 and state["files"]["weights.bin"] == {
        "size": 5, "sha256": "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"}
    assert set(REQUIRED) <= set(state)


def _remove_state(path: Path) -> None:
    (path / STATE_FILE).unlink()


@pytest.mark.parametrize(("damage", "reason"), [
    (_remove_state, "no state.json (a save that never finished)"),
    (lambda p: (p / STATE_FILE).write_text("{not json"), "its state.json does not read (JSONDecodeError)"),
    (lambda p: (p / STATE_FILE).write_text("[1, 2]"),
     "its state.json lacks step, epoch, batches_in_epoch (written by an older emodist, or not by emodist): "
     "resume it with the emodist that wrote it"),
    (lambda p: write_state(p, {"step": 20, "epoch": 0}, digest=False),
     "its state.json lacks batches_in_epoch, best, loss_sum_per_rank (written by an older emodist"),
    (lambda p: write_state(p, {k: 1 for k in REQUIRED if k != "digest"}, digest=False),
     "its state.json lacks digest (written by"),
    (lambda p: edit_state(p, digest=False, loss_count=3), "its state.json was changed after the save (its digest does not match)"),
    (lambda p: edit_state(p, step=21), "its state.json is of step 21"),
    (lambda p: (p / "weights.bin").unlink(), "weights.bin is missing"),
    (lambda p: (p / "sub" / "rng.pkl").unlink(), "sub/rng.pkl is missing"),
    (lambda p: edit_state(p, files={"weights.bin": {"sha256": "x"}}), "its state.json lists weights.bin without its size"),
    (lambda p: edit_state(p, files={"weights.bin": {"size": "5"}}), "its state.json lists weights.bin without its size"),
    (lambda p: edit_state(p, files={"weights.bin": 5}), "its state.json lists weights.bin without its size"),
    (lambda p: (p / "weights.bin").write_bytes(b"123"), "weights.bin is cut short or has grown (3 bytes, saved with 5)"),
    (lambda p: (p / "sub" / "rng.pkl").write_bytes(bytes(2000)),
     "sub/rng.pkl is cut short or has grown (2,000 bytes, saved with 40)"),
    (lambda p: (p / "weights.bin").write_bytes(b"12346"),
     "weights.bin does not match the hash taken when it was saved (corrupted or changed since)"),
])
def test_each_fault_makes_a_checkpoint_unusable_and_is_named(tmp_path, damage, reason):
    path = make_checkpoint(tmp_path, 20)
    damage(path)
    assert unusable(path).startswith(reason), unusable(path)


def test_without_content_checks_only_sizes_are_compared(tmp_path):
    path = make_checkpoint(tmp_path, 20)
    (path / "weights.bin").write_bytes(b"12346")  # the same size, another content
    assert unusable(path, content=False) is None
    assert unusable(path, content=True).startswith("weights.bin does not match the hash")
    (path / "weights.bin").write_bytes(b"1234")
    assert unusable(path, content=False).startswith("weights.bin is cut short")


def test_a_directory_that_is_not_there_or_not_a_directory_is_unusable(tmp_path):
    assert unusable(tmp_path / "step-5") == "no such checkpoint directory"
    (tmp_path / "step-6").write_text("")
    assert unusable(tmp_path / "step-6") == "no such checkpoint directory"


def test_a_state_that_lists_no_files_verifies_its_digest_only(tmp_path):
    path = make_checkpoint(tmp_path, 20)
    edit_state(path, files=[])  # not a manifest: nothing to check file by file
    assert unusable(path) is None


def test_a_checkpoint_named_otherwise_is_not_held_to_a_step(tmp_path):
    path = make_checkpoint(tmp_path, 20)
    renamed = path.rename(path.parent / "best")
    assert unusable(renamed) is None


def test_the_newest_usable_checkpoint_is_taken_and_newer_ones_are_skipped_with_their_reason(tmp_path):
    for step in (9, 20, 100, 1000):
        make_checkpoint(tmp_path, step)
    (tmp_path / "checkpoints" / "step-1000" / "weights.bin").write_bytes(b"123")
    (tmp_path / "checkpoints" / "step-100" / STATE_FILE).unlink()
    (tmp_path / "checkpoints" / "step-x").mkdir()  # not a step: ignored
    (tmp_path / "checkpoints" / ".step-2000.tmp").mkdir()  # a save in progress: ignored
    newest, skipped = latest_checkpoint(tmp_path)
    assert newest == tmp_path / "checkpoints" / "step-20"  # by number: 20 > 9, though "9" > "20" as text
    assert [(p.name, why) for p, why in skipped] == [
        ("step-1000", "weights.bin is cut short or has grown (3 bytes, saved with 5)"),
        ("step-100", "no state.json (a save that never finished)")]


def test_sizes_only_takes_a_checkpoint_whose_content_changed(tmp_path):
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 20)
    (tmp_path / "checkpoints" / "step-20" / "weights.bin").write_bytes(b"54321")
    assert latest_checkpoint(tmp_path, content=False)[0].name == "step-20"
    newest, skipped = latest_checkpoint(tmp_path)
    assert newest.name == "step-10" and [p.name for p, _ in skipped] == ["step-20"]


def test_the_rotation_keeps_the_checkpoint_it_follows_and_drops_older_leftovers(tmp_path):
    """A save used to keep the newest `keep_last` by step number: with later checkpoints of an abandoned timeline
    there, the one just written was deleted in its own save (a requeued job came back to step 192 forever)."""
    from emodist.rundir.timeline import rotate

    root = tmp_path / "checkpoints"
    for step in (100, 192, 300, 500, 512):
        make_checkpoint(tmp_path, step)
    (root / "step-100" / STATE_FILE).unlink()  # a deletion a kill cut short: never resumable, as large as the rest
    (root / ".step-600.tmp").mkdir()  # not the rotation's: the next save clears it
    dropped = rotate(root, root / "step-300", keep_last=1, best_step=192)
    assert sorted(p.name for p in dropped) == ["step-100"]
    assert sorted(p.name for p in root.iterdir()) == [".step-600.tmp", "step-192", "step-300", "step-500", "step-512"]
    make_checkpoint(tmp_path, 600)
    assert [p.name for p in rotate(root, root / "step-600", keep_last=2, best_step=None)] == ["step-192", "step-300", "step-500"]


def test_a_resume_sets_the_later_checkpoints_aside_whole_where_nothing_reads_them(tmp_path):
    from emodist.rundir.timeline import set_aside_after

    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        make_checkpoint(tmp_path, step)
    (root / "step-30" / "weights.bin").write_bytes(b"54")  # damaged: skipped by --resume auto, kept for a look
    (root / "step-40").mkdir()  # incomplete
    before = {p.relative_to(root / "step-30"): p.read_bytes() for p in (root / "step-30").rglob("*") if p.is_file()}
    assert set_aside_after(root, 30) is not None  # step-40 only
    aside = set_aside_after(root, 10)
    assert aside.parent == root and aside.name.startswith("superseded-")
    assert sorted(p.name for p in aside.iterdir()) == ["step-20", "step-30"]
    assert {p.relative_to(aside / "step-30"): p.read_bytes() for p in (aside / "step-30").rglob("*") if p.is_file()} == before
    assert latest_checkpoint(tmp_path) == (root / "step-10", [])
    assert set_aside_after(root, 10) is None


def test_no_checkpoint_at_all(tmp_path):
    assert latest_checkpoint(tmp_path) == (None, [])
    make_checkpoint(tmp_path, 5)
    (tmp_path / "checkpoints" / "step-5" / "weights.bin").unlink()
    newest, skipped = latest_checkpoint(tmp_path)
    assert newest is None and [(p.name, why) for p, why in skipped] == [("step-5", "weights.bin is missing")]


# ---------------------------------------------------------------------------------------------------
# Fingerprints: what a resume must share with its checkpoint


def test_the_fingerprint_holds_the_settings_that_shape_the_state_and_not_the_others():
    cfg = config.load("gemma-lora", smoke=True)
    print_ = fingerprint(cfg, ["joy", "anger"])
    assert print_["labels"] == ["joy", "anger"]
    assert print_["model.lora.r"] == cfg.model.lora.r and print_["optim.lr"] == cfg.optim.lr
    assert print_["train.seed"] == cfg.train.seed and print_["train.global_batch_size"] == cfg.train.global_batch_size
    assert print_["train.micro_batch_size"] == cfg.train.micro_batch_size and "train.pos_weight" in print_
    assert print_["data.max_length"] == cfg.data.max_length
    assert isinstance(print_["model.lora.target_modules"], list)  # tuples as lists: JSON round-trips them
    for free in ("data.cache_dir", "train.max_steps", "train.epochs", "train.save_every_steps", "output_dir",
                 "track.wandb"):
        assert free not in print_
    longer = config.load("gemma-lora", smoke=True, overrides=["train.max_steps=999", "train.save_every_steps=7"])
    assert fingerprint(longer, ["joy", "anger"]) == print_  # the length of training may change
    other = config.load("gemma-lora", smoke=True, overrides=["model.lora.r=4"])
    assert differences(print_, fingerprint(other, ["joy", "anger"])) == "model.lora.r=16 there, 4 here"
    asl = fingerprint(config.load("gemma-lora", smoke=True, overrides=["train.loss=asl"]), ["joy", "anger"])
    assert differences(print_, asl) == 'train.loss="bce" there, "asl" here'  # the loss shapes the optimizer state
    # recomputing activations changes memory, not numbers: what lets a requeued job fit a smaller GPU (a
    # checkpoint saved when the key was in the fingerprint resumes too)
    assert cfg.model.gradient_checkpointing and "model.gradient_checkpointing" not in print_
    lighter = config.load("gemma-lora", smoke=True, overrides=["model.gradient_checkpointing=false"])
    assert differences({**print_, "model.gradient_checkpointing": True}, fingerprint(lighter, ["joy", "anger"])) == ""


def test_other_base_weights_under_the_same_adapters_are_refused_naming_the_base(tmp_path):
    """A LoRA checkpoint holds the adapters only: a base written over (or a new hub snapshot) was trained on
    without a word (found by a new user)."""
    from emodist.models import base_identity

    base = tmp_path / "base"
    base.mkdir()
    weights = bytes(range(256)) * 9000  # 2.3 MB: its first and last MiB are read
    (base / "model.safetensors").write_bytes(weights)
    (base / "config.json").write_text("{}")
    (base / "tokenizer.json").write_text("{}")  # not the weights
    first = base_identity(str(base))
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in base.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    assert base_identity(str(copy)) == first  # where it lies does not matter, its bytes do
    (copy / "tokenizer.json").write_text('{"a": 1}')
    assert base_identity(str(copy)) == first
    (base / "model.safetensors").write_bytes(b"\1" + weights[1:])  # noise in the weights, same size
    assert base_identity(str(base)) != first
    assert base_identity("nobody/not-cached-here") is None and base_identity(str(tmp_path / "none")) is None

    saved = {"model.name_or_path": str(base), "model.base": first, "labels": ["joy"]}
    current = {**saved, "model.base": base_identity(str(base))}
    with pytest.raises(UsageError) as refused:
        check_resumable(Path("ck"), {"fingerprint": saved, **TOPOLOGY}, current, TOPOLOGY)
    assert str(refused.value) == (f"--resume ck: it holds LoRA adapters trained on other base weights than {base} has "
                                  "now (a new hub snapshot, or files written over): resume on the base it trained on "
                                  "(model.name_or_path=its directory), or start a new run in a new --output-dir")
    older = {k: v for k, v in saved.items() if k != "model.base"}  # saved before the base was identified
    check_resumable(Path("ck"), {"fingerprint": older, **TOPOLOGY}, current, TOPOLOGY)


def test_a_checkpoint_older_than_a_setting_resumes_when_the_setting_is_at_its_default():
    """A checkpoint written before train.loss existed trained with BCE: it resumes into a BCE run, not an ASL one."""
    cfg = config.load("minilm", smoke=True)
    saved = {k: v for k, v in fingerprint(cfg, ["joy"]).items()
             if not k.startswith(("train.loss", "train.focal_gamma", "train.asl_"))}
    assert differences(saved, fingerprint(cfg, ["joy"])) == ""
    asl = config.load("minilm", smoke=True, overrides=["train.loss=asl"])
    assert differences(saved, fingerprint(asl, ["joy"])) == 'train.loss="bce" there, "asl" here'


def test_the_fingerprint_hash_depends_on_values_not_on_key_order():
    assert fingerprint_hash({"a": 1, "b": [1, 2]}) == fingerprint_hash({"b": [1, 2], "a": 1})
    assert fingerprint_hash({"a": 1}) != fingerprint_hash({"a": 2})
    assert len(fingerprint_hash({"a": 1})) == 16


def test_differences_name_the_first_three_and_count_the_rest():
    assert differences({"a": 1}, {"a": 1}) == ""
    assert differences({"a": 1, "b": "x"}, {"a": 2, "c": True}) == (
        'a=1 there, 2 here; b="x" there, null here; c=null there, true here')
    five = differences({k: 0 for k in "abcde"}, {k: 1 for k in "abcde"})
    assert five == "a=0 there, 1 here; b=0 there, 1 here; c=0 there, 1 here (and 2 more)"
    four = differences({k: 0 for k in "abcd"}, {k: 1 for k in "abcd"})
    assert four.endswith("(and 1 more)")
    long = differences({"k": "x" * 60}, {"k": "y" * 38})
    assert long == f'k="{"x" * 36}... there, "{"y" * 38}" here'  # 40 characters at most, 37 and "..." beyond
    assert differences({"k": "x" * 39}, {"k": 1}) == f'k="{"x" * 36}... there, 1 here'  # 41 characters


def test_a_tuple_in_the_settings_compares_equal_to_the_list_json_gives_back():
    current = fingerprints._flatten({"model": {"lora": {"target_modules": ("q", "v")}}})
    assert current == {"model.lora.target_modules": ["q", "v"]}
    assert differences(json.loads(json.dumps(current)), current) == ""


def _state(**changes) -> dict:
    return {**TOPOLOGY, "fingerprint": {"model.lora.r": 8, "labels": ["joy"]}, **changes}


def test_a_checkpoint_that_fits_is_resumed():
    check_resumable(Path("runs/r/checkpoints/step-4"), _state(), {"model.lora.r": 8, "labels": ["joy"]}, TOPOLOGY)


@pytest.mark.parametrize(("current", "topology", "resume", "message"), [
    ({"model.lora.r": 16, "labels": ["joy"]}, TOPOLOGY, None,
     "--resume runs/r/checkpoints/step-4: it was trained with other settings: model.lora.r=8 there, 16 here: resume "
     "with its settings (--config on the run's config.yaml), or start a new run in a new --output-dir"),
    ({"model.lora.r": 8, "labels": ["joy", "fear"]}, TOPOLOGY, "auto",
     '--resume auto: runs/r/checkpoints/step-4 was trained with other settings: labels: "fear" only here: resume'),
    ({"model.lora.r": 8, "labels": ["joy"]}, {**TOPOLOGY, "num_processes": 4}, "auto",
     "--resume auto: runs/r/checkpoints/step-4 was written with num_processes=2, this run has num_processes=4; each "
     "rank's data position and RNG stream belong to its rank. Launch with the same accelerate config and "
     "--num_processes, or start a new run in a new --output-dir"),
    ({"model.lora.r": 8, "labels": ["joy"]}, {**TOPOLOGY, "zero_stage": 3}, "runs/r/checkpoints/step-4",
     "--resume runs/r/checkpoints/step-4: it was written with zero_stage=None, this run has zero_stage=3; DeepSpeed "
     "cannot re-partition optimizer states for another stage."),
    ({"model.lora.r": 8, "labels": ["joy"]}, {**TOPOLOGY, "distributed_type": "DEEPSPEED"}, "auto",
     "--resume auto: runs/r/checkpoints/step-4 was written with distributed_type=MULTI_CPU, this run has "
     "distributed_type=DEEPSPEED; its checkpoint format belongs to the topology."),
])
def test_a_checkpoint_that_does_not_fit_is_refused_naming_what_differs(current, topology, resume, message):
    with pytest.raises(UsageError) as refused:
        check_resumable(Path("runs/r/checkpoints/step-4"), _state(), current, topology, resume)
    assert str(refused.value).startswith(message), str(refused.value)


def test_the_data_s_content_decides_not_the_path_it_is_read_from():
    """A checkpoint records its splits' sizes and hashes (`emodist.data.identity`): the same path with other
    contents is refused; the same contents from another path resume; a checkpoint from before the hashes
    still compares the path."""
    train = {"data.split.train": "200 texts, 163c", "data.split.dev": "64 texts, 0a1b"}
    state = _state(fingerprint={"data.data_dir": "/data/emo", "labels": ["joy"], **train})
    edited = {"data.data_dir": "/data/emo", "labels": ["joy"], **train, "data.split.train": "500 texts, eb34"}
    with pytest.raises(UsageError) as refused:
        check_resumable(Path("c"), state, edited, TOPOLOGY)
    assert str(refused.value) == ('--resume c: it was trained on other data: data.split.train="200 texts, 163c" there, '
                                  '"500 texts, eb34" here: resume with the data it was trained on, or start a new run in '
                                  "a new --output-dir")
    check_resumable(Path("c"), state, {"data.data_dir": "../../data/emo", "labels": ["joy"], **train}, TOPOLOGY)
    # started with --data-dir (data.dataset=auto) in a directory that now holds a second data set, which detection
    # refuses: resumed with data.dataset named, it was refused as "other settings", with no way out but moving files
    detected = _state(fingerprint={"data.dataset": "auto", "labels": ["joy"], **train})
    check_resumable(Path("c"), detected, {"data.dataset": "goemotions", "labels": ["joy"], **train}, TOPOLOGY)
    older = _state(fingerprint={"data.data_dir": "/data/emo", "labels": ["joy"]})
    check_resumable(Path("c"), older, {"data.data_dir": "/data/emo", "labels": ["joy"], **train}, TOPOLOGY)
    with pytest.raises(UsageError, match='data.data_dir="/data/emo" there, "/data/other" here'):
        check_resumable(Path("c"), older, {"data.data_dir": "/data/other", "labels": ["joy"], **train}, TOPOLOGY)


def test_settings_are_checked_before_the_topology():
    with pytest.raises(UsageError, match="other settings"):
        check_resumable(Path("c"), _state(), {"model.lora.r": 4, "labels": ["joy"]}, {**TOPOLOGY, "num_processes": 1})


def test_a_state_holding_nan_matches_its_digest_once_written():
    """state.json is written with NaN as null (strict JSON): a digest taken of the NaN made every checkpoint
    saved before the first logged loss unusable ("its state.json was changed after the save")."""
    from emodist.rundir.checkpoints import _digest

    assert _digest({"last_loss": float("nan"), "perf": [1.0, float("inf")]}) == _digest(
        {"last_loss": None, "perf": [1.0, None]})


def test_a_free_name_replaces_nothing_that_is_there(tmp_path):
    """Where checkpoints, a run or a summary are moved aside: a second move within the same second, or a link
    left at the name (even one to nothing), must not be replaced."""
    from emodist.runtime.files import free_name

    def numbered(number):
        return tmp_path / f"x-{number}"

    assert free_name(tmp_path / "x", numbered) == tmp_path / "x"
    (tmp_path / "x").mkdir()
    (tmp_path / "x-2").symlink_to(tmp_path / "nothing")  # a dangling link: exists() says False
    (tmp_path / "x-3").write_text("")
    assert free_name(tmp_path / "x", numbered) == tmp_path / "x-4"
