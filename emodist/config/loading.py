"""Loading a run configuration from its layers: the schema defaults, the variant preset, the smoke preset,
the YAML file, the `key=value` overrides and the command-line flags, each later one winning.

    cfg = load(variant="gemma-lora", config_file="my.yaml", overrides=["optim.lr=2e-4"], smoke=True)

Every problem in every layer is collected and raised as one `UsageError` that names the key, where it was
set (file:line or the override) and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from emodist.config import variants
from emodist.config.rules import exists, is_dir, is_file
from emodist.config.schema import RunConfig
from emodist.runtime.errors import UsageError, shown, utf8_text


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    where: str


def load(
    variant: str | None = None,
    config_file: str | None = None,
    overrides: typing.Sequence[str] = (),
    smoke: bool | None = None,
    cli: dict[str, Any] | None = None,
    data_here: bool = True,
) -> RunConfig:
    """Build and validate the run config from its layers (see the module docstring).

    `cli` maps dotted keys to the command-line flag that set them and its value (e.g.
    {"output_dir": ("--output-dir", "runs/x")}); None values are skipped. `data_here=False` reads a config
    for what it says without its data (a finished run's, to export or plan): data.data_dir need not exist.
    Raises UsageError naming every problem.
    """
    file_settings = _read_yaml(config_file) if config_file else []
    override_settings = [_parse_override(text) for text in overrides]
    empty = [flag for flag, value in (cli or {}).values() if isinstance(value, str) and not value.strip()]
    if empty:  # an override's empty value means unset; an empty flag is a slip (an unset shell variable)
        raise UsageError(f"{empty[0]} is empty: give it a value, or leave the flag out")
    cli_settings = [Setting(k, v, flag) for k, (flag, v) in (cli or {}).items() if v is not None]
    user = file_settings + override_settings + cli_settings

    name = variant or _last(user, "variant")
    given = next((s for s in reversed(user) if s.key == "variant"), None)
    if variant and given is not None and given.value != variant:
        value = given.value if isinstance(given.value, str) else shown(given.value)
        fix = ("drop one of them" if given.where.startswith("override") else f"the file's settings are those of "
               f"{value}; drop --variant, or start from --variant {variant} without this file")
        raise UsageError(f"--variant {variant}, but {given.where} sets variant: {value}: {fix}")
    if name is not None and not isinstance(name, str):
        where = next(s.where for s in reversed(user) if s.key == "variant")
        raise UsageError(f"{where}: variant={shown(name)}: must be the name of a variant ({', '.join(variants.names())})")
    if not name:
        empty = f"{given.where}: variant is empty: " if given is not None else "no variant given: "
        raise UsageError(f"{empty}pass --variant NAME (one of {', '.join(variants.names())})")
    preset = variants.get(name)
    # The variant and smoke choose the presets below them, so they are settled first; the command line wins.
    smoke_settings = [s for s in user if s.key == "smoke"]
    user = [s for s in user if s.key not in ("variant", "smoke")]
    layers = [Setting("variant", name, "--variant" if variant else "config"), *smoke_settings]
    if smoke:
        layers.append(Setting("smoke", True, "--smoke"))
    cfg, where, problems = _apply(RunConfig(), layers)
    layers = _flatten(preset.settings, f"variant {name}")
    if cfg.smoke:
        layers += _flatten(variants.SMOKE, "smoke preset")
    cfg, where_later, problems_later = _apply(cfg, layers + user)
    where.update(where_later)
    problems += problems_later
    # keys whose value could not be read keep an earlier value: do not report them twice
    unread = {p.key for p in problems} | (set() if data_here else {"data.data_dir"})
    messages = [p.message for p in problems] + cfg.problems(where, skip=unread)
    if messages:
        raise UsageError(_join(messages))
    return cfg


def dump(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML: `--config` on it reproduces the run (in a new run directory: the
    run directory is where the file lies, so output_dir is left out)."""
    tree = cfg.to_dict()
    tree.pop("output_dir")
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")


def field_docs() -> dict[str, tuple[str, str]]:
    """Dotted key -> (type, docstring) for every setting of the schema."""
    return {key: (_type_name(tp), doc) for key, (tp, doc) in _schema().items()}


@dataclass(frozen=True)
class _Problem:
    key: str
    message: str


def _apply(cfg: RunConfig, settings: list[Setting]) -> tuple[RunConfig, dict[str, str], list[_Problem]]:
    schema = _schema()
    where: dict[str, str] = {}
    problems: list[_Problem] = []
    for s in settings:
        inner = [key for key in schema if key.startswith(s.key + ".")]
        if inner:  # `optim: 5` (YAML) or optim=5: a value where the section's keys belong
            problems.append(_Problem(s.key, f"{s.where}: {s.key} is a section, not a setting: set its keys, e.g. "
                                            f"{inner[0]}=... (in YAML, a mapping under {s.key}:); "
                                            f"{s.key} has {', '.join(k[len(s.key) + 1:] for k in inner[:6])}"
                                            + (", ..." if len(inner) > 6 else "")))
            continue
        if s.key not in schema:
            close = difflib.get_close_matches(s.key, schema, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "see `launch/train.py --list-keys`"
            problems.append(_Problem(s.key, f"{s.where}: unknown key {s.key!r} ({hint})"))
            continue
        try:
            value = _coerce(s.value, schema[s.key][0])
        except ValueError as err:
            problems.append(_Problem(s.key, f"{s.where}: {s.key}={shown(s.value)}: {err}"))
            continue
        section, _, name = s.key.rpartition(".")
        setattr(_resolve(cfg, section), name, value)
        if not s.where.startswith(("variant ", "smoke preset")):
            where[s.key] = s.where
    return cfg, where, problems


def _resolve(obj: Any, dotted: str) -> Any:
    for part in filter(None, dotted.split(".")):
        obj = getattr(obj, part)
    return obj


@functools.cache
def _schema(cls: type = RunConfig, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Dotted key -> (type, docstring) of every leaf field, docstrings read from the class source."""
    hints = typing.get_type_hints(cls)
    docs = _attribute_docs(cls)
    out: dict[str, tuple[Any, str]] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_schema(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (tp, docs.get(f.name, ""))
    return out


def _attribute_docs(cls: type) -> dict[str, str]:
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())  # type: ignore[attr-defined]
    return docs


def _coerce(value: Any, tp: Any) -> Any:
    """Convert `value` (typed YAML or an override string) to `tp`; ValueError says what is expected."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)))
    if origin is Literal:
        if isinstance(value, bool) and ("off" if not value else "on") in args:  # YAML 1.1 reads off and on as booleans
            return "off" if not value else "on"
        if value not in args:
            raise ValueError(f"must be one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            except yaml.YAMLError as err:
                raise ValueError(f"is not a valid YAML list ({_yaml_problem(err)}); write "
                                 "[q_proj, v_proj] or q_proj,v_proj") from None
        if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v for v in value):
            raise ValueError("must be a list of names, e.g. [q_proj, v_proj] or q_proj,v_proj")
        return [v.strip() for v in value]
    if tp is bool:
        return _coerce_bool(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError("must be a whole number")
        try:
            return int(value.strip()) if isinstance(value, str) else value
        except ValueError:
            raise ValueError("must be a whole number") from None
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number (not nan or inf)")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if "\0" in value:
            raise ValueError("must not contain a NUL character")
        return value
    raise TypeError(f"unsupported config type {tp}")  # a schema bug, not a user error


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError("must be true or false")


def _type_name(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return "|".join(map(str, args))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if typing.get_origin(tp) is list:
        return f"list[{_type_name(args[0])}]"
    return "None" if tp is type(None) else tp.__name__


def _parse_override(text: str) -> Setting:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"override {text!r} is not KEY=VALUE (e.g. optim.lr=2e-4)")
    return Setting(key.strip(), value.strip(), f"override {text!r}")


def _read_yaml(path_text: str) -> list[Setting]:
    """Settings of a YAML file, each with its file:line."""
    path = Path(path_text)
    if not is_file(path) and (is_dir(path) or not exists(path)):  # a pipe (--config <(...)) or /dev/null reads
        kind = "a directory, not a file" if is_dir(path) else "no such file"
        if str(path).startswith(("/dev/fd/", "/proc/self/fd/")):  # accelerate launch closes the shell's pipe
            kind = "a pipe that does not reach this process (accelerate launch starts it without the shell's pipes)"
        raise UsageError(f"--config {path}: {kind}: name a YAML file, e.g. a run's config.yaml")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UsageError(f"--config {path}: cannot read it ({err.strerror})") from None
    text = utf8_text(raw, str(path), "save the file as UTF-8")
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        if root is None:
            return []
        if not isinstance(root, yaml.MappingNode):
            raise UsageError(f"{path}:{root.start_mark.line + 1}: the config must be a mapping of keys to values")
        settings = list(_walk_yaml(loader, root, "", path))
    except yaml.YAMLError as err:
        raise UsageError(f"{path}:{_yaml_line(err, text)}: invalid YAML: {_yaml_problem(err)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    first: dict[str, str] = {}
    for setting in settings:
        if setting.key in first:
            raise UsageError(f"{setting.where}: {setting.key} is set a second time (first at {first[setting.key]}): "
                             "keep one of them")
        first[setting.key] = setting.where
    return settings


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's account of `err` in one line (a reader error, a control character in the text, has no
    `problem`: its text says it, over two lines)."""
    return (getattr(err, "problem", None) or str(err)).splitlines()[0]


def _yaml_line(err: yaml.YAMLError, text: str) -> int:
    """The line of `text` that holds `err`: a parser's mark, or the reader's position in the text."""
    mark = getattr(err, "problem_mark", None)
    if mark is not None:
        return mark.line + 1
    return text[:getattr(err, "position", 0)].count("\n") + 1


def _walk_yaml(loader: yaml.SafeLoader, node: yaml.MappingNode, prefix: str, path: Path):
    for key_node, value_node in node.value:
        where = f"{path}:{key_node.start_mark.line + 1}"
        if key_node.tag == "tag:yaml.org,2002:merge":  # read as a key, it was "unknown key 'train.<<.epochs'"
            raise UsageError(f"{where}: a YAML merge key (<<) is not read in a config: write its keys out, each once")
        if not isinstance(key_node, yaml.ScalarNode):
            raise UsageError(f"{where}: a key must be a name (e.g. train or lr), not a YAML {key_node.id}")
        key = f"{prefix}{key_node.value}"
        if isinstance(value_node, yaml.MappingNode):
            yield from _walk_yaml(loader, value_node, f"{key}.", path)
        else:
            yield Setting(key, loader.construct_object(value_node, deep=True), where)


def _flatten(tree: dict[str, Any], where: str, prefix: str = "") -> list[Setting]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _flatten(value, where, f"{prefix}{key}.")
        else:
            out.append(Setting(f"{prefix}{key}", value, where))
    return out


def _last(settings: list[Setting], key: str) -> Any:
    values = [s.value for s in settings if s.key == key]
    return values[-1] if values else None


def _join(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems in the configuration:\n" + "\n".join(f"  - {p}" for p in problems)
