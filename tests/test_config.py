"""Config: layering, overrides, YAML with line numbers, validation that lists every problem."""

from __future__ import annotations

import pytest

from emodist import config
from emodist.config import loading, variants
from emodist.runtime.errors import UsageError


def test_variant_preset_is_applied():
    cfg = config.load("mistral-qlora")
    assert cfg.variant == "mistral-qlora"
    assert cfg.model.name_or_path == "mistralai/Mistral-7B-Instruct-v0.2"
    assert (cfg.model.method, cfg.model.quantization, cfg.model.architecture) == ("lora", "nf4", "mistral")
    assert cfg.model.head_modules == ["score"]
    assert cfg.optim.name == "paged_adamw_8bit"


def test_every_variant_loads_and_validates():
    for name in variants.names():
        for smoke in (False, True):
            cfg = config.load(name, smoke=smoke)
            assert cfg.variant == name and cfg.smoke is smoke


def test_smoke_layer_swaps_data_but_keeps_the_method():
    cfg = config.load("gemma-lora", smoke=True)
    assert cfg.data.dataset == "synthetic"
    assert cfg.model.method == "lora" and cfg.model.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_overrides_are_typed_and_win_over_file(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("optim:\n  lr: 1.0e-3\ntrain:\n  epochs: 5\n")
    cfg = config.load("distilbert", str(file), ["optim.lr=2e-4", "model.lora.target_modules=q_lin,v_lin",
                                               "data.max_train_examples=100", "train.max_steps=none"])
    assert cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.train.epochs == 5
    assert cfg.model.lora.target_modules == ["q_lin", "v_lin"]
    assert cfg.data.max_train_examples == 100 and cfg.train.max_steps is None


def test_command_line_flags_win_over_overrides():
    cfg = config.load("distilbert", overrides=["output_dir=runs/a"], cli={"output_dir": ("--output-dir", "runs/b")})
    assert cfg.output_dir == "runs/b"


def test_misspelt_yaml_key_names_file_line_and_suggestion(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("train:\n  epochs: 2\noptim:\n  lrr: 3e-4\n")
    with pytest.raises(UsageError) as err:
        config.load("distilbert", str(file))
    assert str(err.value) == f"{file}:4: unknown key 'optim.lrr' (did you mean optim.lr?)"


def test_every_problem_is_listed_at_once():
    with pytest.raises(UsageError) as err:
        config.load("distilbert", overrides=["optim.lr=abc", "train.micro_batch_size=7", "optim.warmup_ratio=1.5"])
    message = str(err.value)
    assert message.startswith("3 problems")
    assert "optim.lr='abc': must be a number" in message
    assert "train.global_batch_size: must be a multiple of train.micro_batch_size=7" in message
    assert "optim.warmup_ratio: must be in [0, 1) [override 'optim.warmup_ratio=1.5']" in message


def test_contradictions_are_refused_in_words():
    with pytest.raises(UsageError, match="needs model.method=lora"):
        config.load("distilbert", overrides=["model.quantization=nf4"])
    with pytest.raises(UsageError, match="one of auto, goemotions"):
        config.load("distilbert", overrides=["data.dataset=imdb"])


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(UsageError) as err:
        config.load("gema-lora")
    assert "did you mean gemma-lora?" in str(err.value)
    assert all(name in str(err.value) for name in variants.names())


def test_invalid_yaml_names_the_line(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("train:\n  epochs: [1\n")
    with pytest.raises(UsageError, match=rf"{file}:\d+: invalid YAML"):
        config.load("distilbert", str(file))


def test_resolved_config_round_trips(tmp_path):
    cfg = config.load("gemma-lora", overrides=["optim.lr=3e-4", "model.lora.r=4"], smoke=True)
    config.dump(cfg, tmp_path / "config.yaml")
    again = config.load(config_file=str(tmp_path / "config.yaml"))
    assert again == cfg


@pytest.mark.parametrize(("global_batch", "micro", "processes", "expected"), [(32, 8, 1, 4), (32, 8, 2, 2), (32, 16, 2, 1)])
def test_gradient_accumulation_is_derived(global_batch, micro, processes, expected):
    train = config.TrainConfig(global_batch_size=global_batch, micro_batch_size=micro)
    assert train.gradient_accumulation_steps(processes) == expected


def test_gradient_accumulation_must_divide():
    train = config.TrainConfig(global_batch_size=32, micro_batch_size=8)
    with pytest.raises(UsageError, match="not a multiple of train.micro_batch_size x processes = 8 x 3"):
        train.gradient_accumulation_steps(3)


def test_every_field_has_a_docstring():
    docs = config.field_docs()
    assert "optim.head_lr" in docs
    assert [key for key, (_, doc) in docs.items() if not doc] == []


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=nan", "optim.lr='nan': must be a finite number (not nan or inf)"),
    ("optim.lr=inf", "optim.lr='inf': must be a finite number (not nan or inf)"),
    ("optim.lr=1e999", "optim.lr='1e999': must be a finite number"),
    ("optim.max_grad_norm=nan", "optim.max_grad_norm='nan': must be a finite number"),  # used to turn clipping off
    ("train.seed=-1", "train.seed: must be in 0..4294967295"),
    ("train.seed=4294967296", "train.seed: must be in 0..4294967295"),
    ("track.tags=[a, b", "track.tags='[a, b': is not a valid YAML list"),
    ("export.max_shard_size=huge", "export.max_shard_size: 'huge' is not a size: write a whole number and KB, MB"),
    ("output_dir=" + "x" * 300, "output_dir: has a name longer than 255 bytes"),
])
def test_values_no_run_can_use_are_refused_with_their_key(override, message):
    with pytest.raises(UsageError) as err:
        config.load("distilbert", overrides=[override])
    assert message in str(err.value)
    assert f"override {override!r}" in str(err.value)


def test_a_key_set_twice_in_one_file_is_refused_with_both_lines(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("optim:\n  lr: 1.0e-3\ntrain:\n  epochs: 2\noptim.lr: 2.0e-3\n")
    with pytest.raises(UsageError) as err:
        config.load("distilbert", str(file))
    assert str(err.value) == f"{file}:5: optim.lr is set a second time (first at {file}:2): keep one of them"


def test_a_config_that_is_not_utf8_names_the_line(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_bytes("train:\n  epochs: 2\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UsageError) as err:
        config.load("distilbert", str(file))
    assert str(err.value) == f"{file}:3: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_an_empty_flag_is_refused_not_read_as_unset():
    """--output-dir '' (an unset shell variable) used to send the run to the default runs/<variant>-<time>."""
    with pytest.raises(UsageError, match=r"^--output-dir is empty: give it a value, or leave the flag out$"):
        config.load("distilbert", cli={"output_dir": ("--output-dir", "")})


def test_a_problem_set_by_a_flag_names_the_flag():
    with pytest.raises(UsageError) as err:
        config.load("distilbert", cli={"data.data_dir": ("--data-dir", "/no/such/dir")})
    assert str(err.value) == "data.data_dir: /no/such/dir is not a directory [--data-dir]"


def test_a_variant_flag_that_contradicts_the_config_file_is_refused(tmp_path):
    """--variant minilm on a distilbert run's config.yaml used to train distilbert and call it minilm."""
    file = tmp_path / "config.yaml"
    config.dump(config.load("distilbert"), file)
    with pytest.raises(UsageError) as err:
        config.load("minilm", str(file))
    assert str(err.value) == (f"--variant minilm, but {file}:1 sets variant: distilbert: the file's settings are those "
                              "of distilbert; drop --variant, or start from --variant minilm without this file")
    assert config.load("distilbert", str(file)).variant == "distilbert"
    with pytest.raises(UsageError) as err:  # not a file: the message said "the file's settings"
        config.load("minilm", overrides=["variant=distilbert"])
    assert str(err.value) == "--variant minilm, but override 'variant=distilbert' sets variant: distilbert: drop one of them"


def test_a_config_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(UsageError, match=rf"--config {tmp_path}: a directory, not a file: name a YAML file"):
        config.load("distilbert", str(tmp_path))


def test_a_runs_config_yaml_leaves_the_run_directory_out(tmp_path):
    """--config on a run's config.yaml repeats the run in a new directory, not into the run it came from."""
    cfg = config.load("distilbert", cli={"output_dir": ("--output-dir", "runs/a")})
    config.dump(cfg, tmp_path / "config.yaml")
    assert "output_dir" not in (tmp_path / "config.yaml").read_text()
    assert config.load(config_file=str(tmp_path / "config.yaml")).output_dir is None


# Every rule of the validation at its edge: the first value that fails gives exactly its line, the last value
# that passes gives none (on distilbert, a full fine-tune, or gemma-lora where the rule is LoRA's).
EDGES = [  # (variant, key, failing, passing, message)
    ("gemma-lora", "model.lora.r", "0", "1", "must be from 1 to 65,536 (a rank past the layers' width adds nothing)"),
    ("gemma-lora", "model.lora.r", "65537", "65536",
     "must be from 1 to 65,536 (a rank past the layers' width adds nothing)"),
    ("gemma-lora", "model.lora.alpha", "0", "1", "must be > 0"),
    ("gemma-lora", "model.lora.target_modules", "[]", "[q_proj]", "is empty: name the Linear layers that get adapters"),
    ("distilbert", "model.lora.dropout", "1", "0.999", "must be in [0, 1)"),
    ("distilbert", "model.lora.dropout", "-0.001", "0", "must be in [0, 1)"),
    ("distilbert", "data.max_length", "7", "8", "must be in [8, 32768]"),
    ("distilbert", "data.max_length", "32769", "32768", "must be in [8, 32768]"),
    ("distilbert", "data.max_train_examples", "0", "1", "must be >= 1"),
    ("distilbert", "data.max_eval_examples", "0", "1", "must be >= 1"),
    ("distilbert", "data.pad_to_multiple_of", "0", "1", "must be in [1, 128] (or unset: 8 on GPUs, 1 on CPUs)"),
    ("distilbert", "data.pad_to_multiple_of", "129", "128", "must be in [1, 128] (or unset: 8 on GPUs, 1 on CPUs)"),
    ("distilbert", "optim.lr", "0", "1e-9", "must be > 0"),
    ("distilbert", "optim.head_lr", "0", "1e-9", "must be > 0 (or unset)"),
    ("distilbert", "optim.weight_decay", "-0.001", "0", "must be >= 0"),
    ("distilbert", "optim.warmup_ratio", "1", "0.999", "must be in [0, 1)"),
    ("distilbert", "optim.warmup_ratio", "-0.001", "0", "must be in [0, 1)"),
    ("distilbert", "optim.max_grad_norm", "-0.001", "0", "must be >= 0 (0 turns clipping off)"),
    ("distilbert", "train.epochs", "0", "1", "must be from 1 to 100,000"),
    ("distilbert", "train.epochs", "100001", "100000", "must be from 1 to 100,000"),
    ("distilbert", "train.max_steps", "0", "1", "must be from 1 to 10,000,000,000 (or unset: every epoch)"),
    ("distilbert", "train.max_steps", "10000000001", "10000000000", "must be from 1 to 10,000,000,000 (or unset: "
     "every epoch)"),
    ("distilbert", "train.eval_batch_size", "0", "1", "must be >= 1"),
    ("distilbert", "train.eval_batch_size", "99999999999999999999999", "1048576",
     "must be <= 1,048,576 (2**20 examples a batch: more than any machine holds)"),
    ("distilbert", "train.global_batch_size", "2097152", "1048576",
     "must be <= 1,048,576 (2**20 examples a batch: more than any machine holds)"),
    ("distilbert", "train.pos_weight_cap", "0.999", "1", "must be >= 1"),
    ("distilbert", "train.log_every_steps", "0", "1", "must be >= 1"),
    ("distilbert", "train.cpu_threads", "0", "1", "must be from 1 to 4,096 (or unset: the cores shared among the "
     "node's processes)"),
    ("distilbert", "train.cpu_threads", "2147483648", "4096", "must be from 1 to 4,096 (or unset: the cores shared "
     "among the node's processes)"),
    ("distilbert", "train.eval_every_steps", "-1", "0", "must be >= 0 (0: only at the end; unset: 8 times per run)"),
    ("distilbert", "train.save_every_steps", "-1", "0", "must be >= 0 (0: only at the end)"),
    ("distilbert", "train.keep_last_checkpoints", "0", "1", "must be >= 1"),
    ("distilbert", "train.seed", "4294967296", "4294967295", "must be in 0..4294967295 (the seed of numpy and torch)"),
    ("distilbert", "train.seed", "-1", "0", "must be in 0..4294967295 (the seed of numpy and torch)"),
    ("distilbert", "export.max_shard_size", "0GB", "1kib", "'0GB' is not a size: write a whole number and KB, MB, GB, "
     "KiB, MiB or GiB, e.g. 2GB"),
]


@pytest.mark.parametrize(("variant", "key", "failing", "passing", "message"), EDGES,
                         ids=[f"{key}={failing}" for _, key, failing, _, _ in EDGES])
def test_every_rule_refuses_from_its_edge_on(variant, key, failing, passing, message):
    def refusal(value: str) -> str | None:
        try:
            config.load(variant, overrides=[f"{key}={value}"])
        except UsageError as err:
            return str(err)
        return None

    assert refusal(failing) == f"{key}: {message} [override '{key}={failing}']"
    assert refusal(passing) is None


def refusal(variant: str | None, overrides: list[str] = (), config_file: str | None = None, **kwargs) -> str | None:
    """The whole message a load refuses with, or None when it loads."""
    try:
        config.load(variant, config_file, overrides, **kwargs)
    except UsageError as err:
        return str(err)
    return None


# The rules that are not a bound of one number: each refused as its whole line, and its nearest passing case.
RULES = [  # (variant, failing overrides, the refusal, passing overrides)
    ("distilbert", ["model.name_or_path="], "model.name_or_path: is empty: give a hub id or a local model directory "
     "[override 'model.name_or_path=']", ["model.name_or_path=x"]),
    ("distilbert", ["model.quantization=nf4"], "model.quantization: a quantized base is frozen, so it needs "
     "model.method=lora [override 'model.quantization=nf4']", ["model.quantization=none"]),
    ("distilbert", ["model.dtype=bfloat16"], "model.dtype: a full fine-tune keeps float32 master weights; use "
     "train.mixed_precision=bf16 for bf16 compute [override 'model.dtype=bfloat16']", ["model.dtype=float32"]),
    # gemma-lora's preset sets its bfloat16 base: a rule it breaks names no place (the user set nothing)
    ("gemma-lora", ["model.method=full"], "model.dtype: a full fine-tune keeps float32 master weights; use "
     "train.mixed_precision=bf16 for bf16 compute", ["model.method=lora"]),
    ("gemma-lora", ["train.mixed_precision=fp16"], "train.mixed_precision: a bfloat16 base computes in bfloat16, so "
     "its float32 head needs autocast: set train.mixed_precision=auto or bf16, or model.dtype=float32 "
     "[override 'train.mixed_precision=fp16']", ["train.mixed_precision=bf16"]),
    ("gemma-lora", ["model.dtype=float16", "train.mixed_precision=bf16"], "train.mixed_precision: a float16 base "
     "computes in float16, so its float32 head needs autocast: set train.mixed_precision=auto or fp16, or "
     "model.dtype=float32 [override 'train.mixed_precision=bf16']", ["model.dtype=float32", "train.mixed_precision=bf16"]),
    # a quantized base's layers compute in model.compute_dtype, whatever autocast does
    ("mistral-qlora", ["model.quantization=none", "train.mixed_precision=fp16"], "train.mixed_precision: a bfloat16 "
     "base computes in bfloat16, so its float32 head needs autocast: set train.mixed_precision=auto or bf16, or "
     "model.dtype=float32 [override 'train.mixed_precision=fp16']", ["train.mixed_precision=fp16"]),
    ("distilbert", ["train.micro_batch_size=0"], "train.micro_batch_size: must be >= 1 "
     "[override 'train.micro_batch_size=0']", ["train.micro_batch_size=1"]),
    ("distilbert", ["train.global_batch_size=0"], "train.global_batch_size: must be >= 1 "
     "[override 'train.global_batch_size=0']", ["train.global_batch_size=16", "train.micro_batch_size=16"]),
    ("distilbert", ["train.global_batch_size=1", "train.micro_batch_size=1"], None, None),
    # distilbert's preset sets the global batch (32), the smoke preset its own (16): neither names a place
    ("distilbert", ["train.micro_batch_size=5"], "train.global_batch_size: must be a multiple of "
     "train.micro_batch_size=5", ["train.micro_batch_size=4"]),
    ("distilbert", ["train.micro_batch_size=5", "smoke=true"], "train.global_batch_size: must be a multiple of "
     "train.micro_batch_size=5", ["train.micro_batch_size=4", "smoke=true"]),
    ("distilbert", ["data.grouping=ekmann"], "data.grouping: 'ekmann' is neither none, ekman, sentiment nor a JSON "
     "file {group: [labels]} [override 'data.grouping=ekmann']", ["data.grouping=ekman"]),
    ("distilbert", ["data.grouping=Sentiment"], "data.grouping: 'Sentiment' is neither none, ekman, sentiment nor a "
     "JSON file {group: [labels]} [override 'data.grouping=Sentiment']", ["data.grouping=sentiment"]),
    ("distilbert", ["data.dataset=auto"], "data.data_dir: is needed for data.dataset=auto: pass --data-dir DIR",
     ["data.dataset=goemotions"]),
    ("distilbert", ["data.dataset=csv"], "data.data_dir: is needed for data.dataset=csv: pass --data-dir DIR",
     ["data.dataset=semeval2018"]),
    ("distilbert", ["data.dataset=jsonl"], "data.data_dir: is needed for data.dataset=jsonl: pass --data-dir DIR",
     ["data.dataset=synthetic"]),
    # the model trained on the label names and scored F1 0.9975
    ("distilbert", ["data.text_column=labels"], "data.text_column: is data.label_column too ('labels'): a model given "
     "its labels as its text learns nothing to use; name the column that holds the texts [override "
     "'data.text_column=labels']", ["data.text_column=labels", "data.label_column=tags"]),
]


@pytest.mark.parametrize(("variant", "failing", "message", "passing"), RULES,
                         ids=[" ".join(failing) for _, failing, _, _ in RULES])
def test_every_rule_refuses_in_its_line_and_lets_its_neighbour_pass(variant, failing, message, passing):
    assert refusal(variant, failing) == message
    if passing is not None:
        assert refusal(variant, passing) is None


def test_data_dir_rules_that_need_a_directory(tmp_path):
    assert refusal("distilbert", ["data.dataset=csv", f"data.data_dir={tmp_path}"]) is None
    assert refusal("distilbert", ["data.dataset=synthetic", f"data.data_dir={tmp_path}"]) == (
        "data.data_dir: is set but data.dataset=synthetic builds its data itself (--smoke's): set data.dataset=auto "
        f"to read the directory, as --data-dir does, or drop data.data_dir [override 'data.data_dir={tmp_path}']")
    assert refusal("distilbert", [f"data.data_dir={tmp_path}"]) is None  # goemotions from a local copy
    grouping = tmp_path / "groups.json"
    grouping.write_text('{"warm": ["joy"]}')
    assert config.load("distilbert", overrides=[f"data.grouping={grouping}"]).data.grouping == str(grouping)


@pytest.mark.parametrize("key", ["output_dir", "data.data_dir", "data.cache_dir", "data.grouping", "model.name_or_path"])
def test_a_path_no_file_system_holds_is_refused_under_its_key(key):
    name = "n" * 256
    problems = refusal("distilbert", [f"{key}={name}"]).removeprefix("2 problems in the configuration:\n  - ")
    assert f"{key}: has a name longer than 255 bytes ({'n' * 20}...): no file system holds it [override '{key}={name}']" in (
        problems.split("\n  - "))


def test_path_bounds_are_255_bytes_a_name_and_4000_a_path():
    assert refusal("distilbert", ["output_dir=" + "n" * 255]) is None
    assert refusal("distilbert", ["output_dir=" + "é" * 128]).startswith("output_dir: has a name longer than 255 bytes")
    assert refusal("distilbert", [f"output_dir={'n' * 200}/{'m' * 200}"]) is None  # names are split at /
    at_bound = "/".join(["n" * 99] * 40) + "n"  # 40 names of 99 bytes, 39 slashes and one more byte
    assert len(at_bound) == 4000 and refusal("distilbert", [f"output_dir={at_bound}"]) is None
    long = at_bound + "n"
    assert refusal("distilbert", [f"output_dir={long}"]) == (
        f"output_dir: is longer than 4000 bytes: no file system holds such a path [override 'output_dir={long}']")


@pytest.mark.parametrize(("text", "value"), [("true", True), ("Yes", True), ("ON", True), ("1", True),
                                             ("false", False), ("NO", False), ("off", False), ("0", False)])
def test_a_switch_reads_the_words_people_write(text, value):
    assert config.load("distilbert", overrides=[f"track.plots={text}"]).track.plots is value
    assert config.load("distilbert", overrides=[f"track.plots={text}", "track.plots=" + str(not value)]).track.plots is (
        not value)


@pytest.mark.parametrize(("override", "message"), [
    ("track.plots=maybe", "override 'track.plots=maybe': track.plots='maybe': must be true or false"),
    ("train.epochs=two", "override 'train.epochs=two': train.epochs='two': must be a whole number"),
    ("train.max_steps=", None), ("train.max_steps=null", None), ("train.max_steps=None", None),
    ("optim.lr=fast", "override 'optim.lr=fast': optim.lr='fast': must be a number"),
    ("output_dir=a\0b", "override 'output_dir=a\\x00b': output_dir='a\\x00b': must not contain a NUL character"),
    ("track.tags=a\0b", "override 'track.tags=a\\x00b': track.tags='a\\x00b': must be a list of names, e.g. "
     "[q_proj, v_proj] or q_proj,v_proj"),
    ("track.tags=[a, b", "override 'track.tags=[a, b': track.tags='[a, b': is not a valid YAML list (expected ',' or "
     "']', but got '<stream end>'); write [q_proj, v_proj] or q_proj,v_proj"),
    ("track.tags=[a\x07]", "override 'track.tags=[a\\x07]': track.tags='[a\\x07]': is not a valid YAML list "
     "(unacceptable character #x0007: special characters are not allowed); write [q_proj, v_proj] or q_proj,v_proj"),
    ("zzz=1", "override 'zzz=1': unknown key 'zzz' (see `launch/train.py --list-keys`)"),
    ("model.lora=3", "override 'model.lora=3': model.lora is a section, not a setting: set its keys, e.g. "
     "model.lora.r=... (in YAML, a mapping under model.lora:); model.lora has r, alpha, dropout, target_modules"),
    ("output_dir=runs/a=b", None),
])
def test_each_value_that_cannot_be_read_says_what_is_expected(override, message):
    assert refusal("distilbert", [override]) == message


def test_a_head_learning_rate_without_head_modules_is_refused():
    """It was dropped without a word: every weight trained at optim.lr while the banner showed the head's."""
    assert refusal("minilm", ["model.head_modules="]) == (
        "optim.head_lr: applies to model.head_modules, which is empty: name the head's modules (e.g. [classifier]), "
        "or unset optim.head_lr (optim.head_lr=null)")
    assert refusal("minilm", ["model.head_modules=", "optim.head_lr=null"]) is None


def test_an_unset_optional_number_is_none():
    for text in ("", "null", "None"):
        assert config.load("distilbert", overrides=[f"train.max_steps={text}"]).train.max_steps is None
    assert config.load("distilbert", overrides=["output_dir=runs/a=b"]).output_dir == "runs/a=b"


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("train:\n  epochs: 1.5\n", "{file}:2: train.epochs=1.5: must be a whole number"),
    ("train:\n  epochs: true\n", "{file}:2: train.epochs=True: must be a whole number"),
    ("optim:\n  lr: true\n", "{file}:2: optim.lr=True: must be a number"),
    ("output_dir: 5\n", "{file}:1: output_dir=5: must be a string"),
    ("optim: 5\n", "{file}:1: optim is a section, not a setting: set its keys, e.g. optim.name=... (in YAML, a "
     "mapping under optim:); optim has name, lr, head_lr, weight_decay, schedule, warmup_ratio, ..."),
    ("track:\n  tags: 5\n", "{file}:2: track.tags=5: must be a list of names, e.g. [q_proj, v_proj] or q_proj,v_proj"),
    ("track:\n  tags: [1, 2]\n", "{file}:2: track.tags=[1, 2]: must be a list of names, e.g. [q_proj, v_proj] or "
     "q_proj,v_proj"),
    ("smoke: maybe\n", "{file}:1: smoke='maybe': must be true or false"),
    ("variant: 5\n", "{file}:1: variant=5: must be the name of a variant (distilbert, gemma-lora, mistral-lora, "
     "mistral-qlora, minilm)"),
    ("# a list\n- a\n- b\n", "{file}:2: the config must be a mapping of keys to values"),
    ("train:\n  epochs: 2\n bad\n", "{file}:3: invalid YAML: expected <block end>, but found '<scalar>'"),
    ("base: &b\n  epochs: 2\ntrain:\n  <<: *b\n  seed: 1\n",  # it read as "unknown key 'train.<<.epochs'"
     "{file}:4: a YAML merge key (<<) is not read in a config: write its keys out, each once"),
    ("train:\n  ? [a, b]\n  : 1\n", "{file}:2: a key must be a name (e.g. train or lr), not a YAML sequence"),
    # a control character: PyYAML's reader refuses it before parsing, with a position, not a line
    ("train:\n  epochs: 2\n  seed: 1\x07\n", "{file}:3: invalid YAML: unacceptable character #x0007: special "
     "characters are not allowed"),
])
def test_a_config_file_value_that_cannot_be_read_names_its_line(tmp_path, yaml_text, message):
    file = tmp_path / "run.yaml"
    file.write_text(yaml_text)
    variant = None if yaml_text.startswith("variant") else "distilbert"
    assert refusal(variant, config_file=str(file)) == message.format(file=file)


def test_a_value_of_nested_yaml_aliases_is_named_in_a_line_of_its_own_size(tmp_path):
    """373 bytes of aliases (8 levels of 10) are a list of 10**8 strings: its whole repr took 9 s and 2.8 GB,
    and made a one-line refusal of 722 MB (found by a new user)."""
    lines, previous = ["a: &a [" + ", ".join(["lol"] * 10) + "]"], "a"
    for name in "bcdefgh":
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
        previous = name
    file = tmp_path / "laughs.yaml"
    file.write_text("\n".join([*lines, "train: {epochs: *h}"]) + "\n")
    file.with_name("variant.yaml").write_text("\n".join([*lines, "variant: *h"]) + "\n")
    for variant in (None, "distilbert"):  # the variant's value, in either message, was shown whole too
        assert len(refusal(variant, config_file=str(file.with_name("variant.yaml")))) < 2000
    message = refusal("distilbert", config_file=str(file))  # 8 unknown keys (a to h), then this one
    assert message.endswith(f"{file}:9: train.epochs=[[[...], [...], [...], [...], [...], [...], ...], " + ", ".join(
        ["[[...], [...], [...], [...], [...], [...], ...]"] * 5) + ", ...]: must be a whole number")
    assert len(message) < 10 * (len(str(file)) + 100)


def test_without_a_variant_the_load_lists_them(tmp_path):
    listed = "no variant given: pass --variant NAME (one of distilbert, gemma-lora, mistral-lora, mistral-qlora, minilm)"
    assert refusal(None) == listed
    file = tmp_path / "run.yaml"
    file.write_text("train:\n  epochs: 2\n")
    assert refusal(None, config_file=str(file)) == listed
    file.write_text("variant:\ntrain:\n  epochs: 2\n")  # named, but empty: the line says where
    assert refusal(None, config_file=str(file)) == f"{file}:1: variant is empty: " + listed.split(": ", 1)[1]


def test_a_path_that_is_no_directory_says_what_may_be_wrong_with_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert refusal("distilbert", overrides=["data.data_dir=~/emotions"]) == (
        "data.data_dir: ~/emotions is not a directory (~ is expanded by a shell, not in a config value or a quoted "
        "argument: write the full path) [override 'data.data_dir=~/emotions']")
    assert refusal("distilbert", overrides=["data.data_dir=emotions"]) == (
        f"data.data_dir: emotions is not a directory (a relative path is read from the directory the command runs in, "
        f"{tmp_path}) [override 'data.data_dir=emotions']")


def test_a_config_read_from_a_pipe_or_dev_null_loads(tmp_path):
    """`--config <(...)` (a pipe) and `--config /dev/null` were "no such file" (found by a new user)."""
    import os

    assert config.load("minilm", config_file=os.devnull).variant == "minilm"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = os.fork()
    if writer == 0:  # what the shell's process substitution does
        with open(fifo, "w") as out:
            out.write("train:\n  epochs: 2\n")
        os._exit(0)
    assert config.load("minilm", config_file=str(fifo)).train.epochs == 2
    os.waitpid(writer, 0)
    assert refusal("minilm", config_file="/dev/fd/63") == (  # under accelerate launch, which closes the shell's pipes
        "--config /dev/fd/63: a pipe that does not reach this process (accelerate launch starts it without the "
        "shell's pipes): name a YAML file, e.g. a run's config.yaml")


def test_config_files_that_are_not_there_are_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert refusal("distilbert", config_file=str(missing)) == (
        f"--config {missing}: no such file: name a YAML file, e.g. a run's config.yaml")
    assert refusal("distilbert", config_file="a\0b.yaml") == (
        "--config a\0b.yaml: no such file: name a YAML file, e.g. a run's config.yaml")
    too_long = "n" * 300 + ".yaml"  # Path.is_file raises on it (ENAMETOOLONG) before Python 3.12
    assert refusal("distilbert", config_file=too_long) == (
        f"--config {too_long}: no such file: name a YAML file, e.g. a run's config.yaml")


@pytest.mark.parametrize("text", ["optim.lr", "=5", " =5"])
def test_an_override_without_key_and_value_is_refused(text):
    assert refusal("distilbert", [text]) == f"override {text!r} is not KEY=VALUE (e.g. optim.lr=2e-4)"


def test_a_value_that_cannot_be_read_is_reported_once(tmp_path):
    """The file's bad value stays when the override's cannot be read: one problem, the override's."""
    file = tmp_path / "run.yaml"
    file.write_text("optim:\n  lr: -1\n")
    assert refusal("distilbert", ["optim.lr=abc"], str(file)) == "override 'optim.lr=abc': optim.lr='abc': must be a number"


def test_settings_after_an_unknown_key_are_still_checked():
    assert refusal("distilbert", ["optim.lrr=1", "train.epochs=0"]) == (
        "2 problems in the configuration:\n"
        "  - override 'optim.lrr=1': unknown key 'optim.lrr' (did you mean optim.lr?)\n"
        "  - train.epochs: must be from 1 to 100,000 [override 'train.epochs=0']")


def test_the_smoke_flag_wins_over_the_files_smoke(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("smoke: false\n")
    cfg = config.load("distilbert", str(file), smoke=True)
    assert cfg.smoke is True and cfg.data.dataset == "synthetic"


def test_field_docs_give_each_keys_type_and_its_docstring_in_one_line():
    docs = config.field_docs()
    assert {key: docs[key][0] for key in ("model.quantization", "optim.head_lr", "track.tags", "train.epochs",
                                           "smoke", "optim.lr", "output_dir")} == {
        "model.quantization": "none|nf4|int8", "optim.head_lr": "float | None", "track.tags": "list[str]",
        "train.epochs": "int", "smoke": "bool", "optim.lr": "float", "output_dir": "str | None"}
    assert docs["export.max_shard_size"][1] == "Largest safetensors shard of the exported model (e.g. 500MB, 5GB)."
    assert docs["model.quantization"][1] == (
        "Frozen base in bitsandbytes format. `nf4`: 4-bit NormalFloat with double quantization (QLoRA); `int8`: "
        "LLM.int8 8-bit weights. Both need method=lora.")
    # read from the source afresh (field_docs caches the schema for the process)
    assert loading._attribute_docs(config.ExportConfig) == {
        "max_shard_size": "Largest safetensors shard of the exported model (e.g. 500MB, 5GB)."}
    assert list(loading._attribute_docs(config.LoraSettings)) == ["r", "alpha", "dropout", "target_modules"]
    model = loading._attribute_docs(config.ModelConfig)  # fields with string defaults, docstrings over lines
    assert list(model)[:3] == ["name_or_path", "architecture", "method"] and len(model) == 10
    assert model["method"] == "`full`: every weight is trained. `lora`: the base is frozen and low-rank adapters are trained."


def test_a_type_the_schema_cannot_hold_is_a_bug_not_a_users_error():
    with pytest.raises(TypeError, match=r"^unsupported config type <class 'dict'>$"):
        loading._coerce("x", dict)


def test_gradient_accumulation_is_a_whole_number_of_micro_batches():
    steps = config.TrainConfig(global_batch_size=32, micro_batch_size=8).gradient_accumulation_steps(2)
    assert steps == 2 and isinstance(steps, int)
