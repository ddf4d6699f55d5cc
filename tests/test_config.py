"""Config: layering, overrides, YAML with line numbers, validation that lists every problem."""

from __future__ import annotations

import pytest

from emodist import config, variants
from emodist.errors import UsageError


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
    ("gemma-lora", "model.lora.r", "0", "1", "must be >= 1"),
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
    ("distilbert", "train.epochs", "0", "1", "must be >= 1"),
    ("distilbert", "train.max_steps", "0", "1", "must be >= 1 (or unset)"),
    ("distilbert", "train.eval_batch_size", "0", "1", "must be >= 1"),
    ("distilbert", "train.pos_weight_cap", "0.999", "1", "must be >= 1"),
    ("distilbert", "train.log_every_steps", "0", "1", "must be >= 1"),
    ("distilbert", "train.cpu_threads", "0", "1", "must be >= 1 (or unset)"),
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
