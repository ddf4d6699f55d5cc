"""A sweep's spec (YAML): which variant, which settings every trial shares, which ones vary and how, expanded
into trials: one list of `key=value` overrides each, the same every time the same spec is expanded.

    variant: minilm
    name: minilm-losses                 # default: the spec file's name; output_dir default runs/sweeps/<name>
    method: grid                        # grid (every combination) or random (`trials` draws, seeded by `seed`)
    fixed: {data.data_dir: ../shared/data/goemotions, train.epochs: 3}
    parameters:
      train.loss: [bce, asl]            # grid and random: a list of values
      optim.lr: {min: 2e-5, max: 2e-4, log: true}   # random only: a range (log: log-uniform)
    metric: dev_tuned.f1_macro          # what launch/compare.py --rank-by ranks the trials by (a dev score)
    max_parallel: 4                     # --slurm: array tasks running at once (sbatch --array=...%N)

Every trial's config is loaded and validated (as launch/train.py would) before anything runs, so a bad key
or value stops the whole sweep in one line that names the spec, the trial and the key. Relative paths among
the values are kept as written and read from the directory the sweep runs in (its trials train there, as
SLURM array tasks too: emodist.sweep.runner).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emodist import config
from emodist.runtime.errors import UsageError, shown
from emodist.scoring.metrics import SCORES

KEYS = ("variant", "name", "output_dir", "method", "trials", "seed", "smoke", "fixed", "parameters", "metric",
        "max_parallel")
METHODS = ("grid", "random")
DEFAULT_METRIC = "dev_tuned.f1_macro"
MANIFEST = "trials.json"
"""In the sweep directory: the trials a sweep began with (`emodist.sweep.runner`), which a rerun must match."""


@dataclass
class Trial:
    index: int
    name: str
    overrides: list[str]


@dataclass
class Sweep:
    path: Path
    variant: str
    name: str
    output_dir: Path
    smoke: bool = False
    metric: str = DEFAULT_METRIC
    max_parallel: int = 4
    trials: list[Trial] = field(default_factory=list)


SPEC_LEVEL = {
    "variant": "a sweep trains one variant, the one its variant: key names; sweep another variant with a spec of its own",
    "smoke": "the spec's smoke: key sets it for every trial",
    "output_dir": "each trial's run directory is the sweep's output_dir/<trial>: set the spec's output_dir: instead",
}
"""Config keys a sweep sets once for all its trials, at the top of its spec, with why."""


def load(path: Path, output_dir: Path | None = None) -> Sweep:
    """The sweep of the spec file `path`, its trials expanded and each trial's config validated; UsageError
    (one line naming the file and the key) otherwise. `output_dir` overrides the spec's."""
    raw = _read(path)
    where = str(path)
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}: a sweep spec has {', '.join(KEYS)}")
    variant = raw.get("variant")
    if not isinstance(variant, str) or not variant:
        raise UsageError(f"{where}: variant: missing: name the variant every trial trains (launch/train.py --list-variants)")
    name = str(raw.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"{where}: name: {shown(name)}: use letters, digits, '.', '_' and '-' (it names the sweep "
                         "directory and the wandb group)")
    method = raw.get("method", "grid")
    if method not in METHODS:
        raise UsageError(f"{where}: method: {shown(method)}: use grid or random")
    if not isinstance(raw.get("output_dir", ""), str):
        raise UsageError(f"{where}: output_dir: {shown(raw['output_dir'])}: expected a directory path")
    sweep = Sweep(path=path, variant=variant, name=name,
                  output_dir=Path(output_dir or raw.get("output_dir") or Path("runs") / "sweeps" / name),
                  smoke=_bool(raw.get("smoke", False), where, "smoke"),
                  metric=_metric(raw.get("metric", DEFAULT_METRIC), where),
                  max_parallel=_count(raw.get("max_parallel", 4), where, "max_parallel"))
    # a sweep started before these were refused goes on as it began: its trials must stay the ones it listed
    new = not (sweep.output_dir / MANIFEST).is_file()
    if new and len(name) > 100:  # a name of 300 characters was an internal error (a file name too long)
        raise UsageError(f"{where}: name: {shown(name)}: use at most 100 characters")
    for key in ("trials", "seed"):
        if new and method == "grid" and key in raw:  # a grid runs every combination, in order: both were passed over
            raise UsageError(f"{where}: {key}: applies to method: random (a grid runs every combination): remove it, "
                             "or set method: random")
    fixed = _mapping(raw.get("fixed") or {}, where, "fixed")
    parameters = _mapping(raw.get("parameters"), where, "parameters")
    if not parameters:
        raise UsageError(f"{where}: parameters: empty: name at least one config key and its values")
    for section, keys in (("fixed", fixed), ("parameters", parameters)):
        for key in set(keys) & set(SPEC_LEVEL):
            if new or key != "output_dir":  # fixed.output_dir was passed over: its trials list it
                raise UsageError(f"{where}: {section}.{key}: {SPEC_LEVEL[key]}")
    for key in sorted(set(fixed) & set(parameters)):  # the parameter's value would win, unsaid
        raise UsageError(f"{where}: {key} is both fixed and a parameter: keep it in one of them")
    if method == "grid":
        values = [_grid_values(key, spec, where) for key, spec in parameters.items()]
        drawn = [dict(zip(parameters, combo, strict=True)) for combo in itertools.product(*values)]
    else:
        drawn = _random(parameters, _count(raw.get("trials"), where, "trials"), raw.get("seed", 0), where)
    fixed_overrides = [f"{key}={_text(value)}" for key, value in fixed.items()]
    for index, chosen in enumerate(drawn):
        overrides = [*fixed_overrides, *(f"{key}={_text(value)}" for key, value in chosen.items()),
                     f"track.group={name}"]
        sweep.trials.append(Trial(index, _trial_name(index, chosen), overrides))
    loaded: dict[str, str] = {}
    for trial in sweep.trials:
        same = loaded.setdefault(repr(_validate(sweep, trial)), trial.name)
        if new and same != trial.name:  # `optim.lr: [1e-4, 0.0001]`: one model, trained twice
            raise UsageError(f"{where}: trials {same} and {trial.name} set the same config: remove one of the values")
    return sweep


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML keeps the last of a key a mapping names twice, unsaid (two `optim.lr:` lines, two `parameters:`
    blocks): here it is an error naming both lines."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: keys written beside it override it
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):  # a key of another kind: the spec's own checks name it
                continue
            if key in seen:
                raise _Twice(key, seen[key], key_node.start_mark.line + 1)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


class _Twice(Exception):
    def __init__(self, key: str, first: int, second: int):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


def _read(path: Path) -> dict:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeys)  # noqa: S506 - a SafeLoader
    except OSError as err:
        raise UsageError(f"{path}: cannot read the sweep spec ({err.strerror or err})") from None
    except _Twice as twice:
        raise UsageError(f"{path}:{twice.second}: {twice.key} is set a second time (first at {path}:{twice.first}): "
                         "keep one of them") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}{at}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a sweep spec is a YAML mapping (variant:, parameters:, ...)")
    return raw


def _mapping(value, where: str, key: str) -> dict:
    """`fixed:` or `parameters:` as {dotted config key: value}; a section's keys may be nested in YAML, as in a
    config file (`optim: {lr: [...]}`), and a parameter's range stays a mapping ({min, max, log})."""
    if not isinstance(value, dict):
        raise UsageError(f"{where}: {key}: expected a mapping of config keys to values, e.g. {{optim.lr: [1e-5, 1e-4]}}")
    sections = {name.rpartition(".")[0] for name in config.field_docs()}
    flat: dict = {}
    for name, inner in value.items():
        if not isinstance(name, str):
            raise UsageError(f"{where}: {key}: {shown(name)} is no config key: write dotted keys, e.g. optim.lr")
        nested = isinstance(inner, dict) and any(f"{name}.{k}".rpartition(".")[0] in sections for k in inner)
        for dotted, setting in (_mapping({f"{name}.{k}": v for k, v in inner.items()}, where, key) if nested
                                else {name: inner}).items():
            if dotted in flat:  # `optim.lr: 1e-4` beside `optim: {lr: 3e-4}`: as a config file, refused
                raise UsageError(f"{where}: {key}: {dotted} is set twice (dotted and nested): keep one of them")
            flat[dotted] = setting
    return flat


def _bool(value, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key}: {shown(value)}: write true or false")
    return value


def _count(value, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}: {key}: {shown(value)}: expected a whole number >= 1")
    return value


def _metric(value, where: str) -> str:
    if not isinstance(value, str) or not value.startswith(("dev.", "dev_tuned.")):
        raise UsageError(f"{where}: metric: {shown(value)}: trials are selected on dev only: use dev.KEY or dev_tuned.KEY "
                         f"(e.g. {DEFAULT_METRIC})")
    if value.partition(".")[2] not in (*SCORES, "loss"):  # a typo was found by the ranking, after every trial
        raise UsageError(f"{where}: metric: {value}: no such score: KEY is one of {', '.join((*SCORES, 'loss'))}")
    return value


def _grid_values(key: str, spec, where: str) -> list:
    if not isinstance(spec, list) or not spec:
        raise UsageError(f"{where}: parameters.{key}: a grid takes a non-empty list of values, e.g. [1e-5, 1e-4]"
                         + (" (ranges {min, max} are for method: random)" if isinstance(spec, dict) else ""))
    return spec


def _random(parameters: dict, trials: int, seed, where: str) -> list[dict]:
    """`trials` draws of every parameter, seeded: a list is drawn from, a {min, max[, log]} range sampled
    (uniform, or log-uniform): whole numbers for a whole-number key whose bounds are (train.epochs: {min: 1,
    max: 4}), else rounded to 3 significant digits (more where a narrow range needs them) so that names and
    configs stay readable. A combination drawn already is drawn again: two such trials would train the same model."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"{where}: seed: {shown(seed)}: expected a whole number")
    for key, spec in parameters.items():
        if isinstance(spec, dict):
            spec.update({bound: _as_number(spec[bound]) for bound in ("min", "max") if bound in spec})
            low, high = spec.get("min"), spec.get("max")
            if set(spec) - {"min", "max", "log"} or not all(_number(v) for v in (low, high)) or not low < high \
                    or (spec.get("log") and low <= 0):
                raise UsageError(f"{where}: parameters.{key}: a range is {{min: LOW, max: HIGH, log: true|false}} with "
                                 "LOW < HIGH (and LOW > 0 for log)")
        elif not isinstance(spec, list) or not spec:
            raise UsageError(f"{where}: parameters.{key}: expected a list of values or a range {{min, max, log}}")
    rng = random.Random(seed)
    types = config.field_docs()
    drawn: list[dict] = []
    for _ in range(trials):
        for _attempt in range(100):  # a combination drawn already is drawn again: it would train the same model
            chosen = {key: _draw(rng, spec, "int" in types.get(key, ("",))[0].split(" | "))
                      for key, spec in parameters.items()}
            if chosen not in drawn:
                break
        else:
            raise UsageError(f"{where}: trials: {trials}: 100 draws in a row gave only combinations drawn already "
                             f"({len(drawn)} different ones so far): draw fewer trials, or widen the ranges")
        drawn.append(chosen)
    return drawn


def _draw(rng: random.Random, spec, whole_key: bool):
    """One value of a list or a {min, max[, log]} range: a whole number, every one as likely, for a whole-number
    key whose bounds are whole; else rounded (`_round`)."""
    if isinstance(spec, list):
        return rng.choice(spec)
    low, high = spec["min"], spec["max"]
    whole = whole_key and isinstance(low, int) and isinstance(high, int)
    if whole and not spec.get("log"):
        return rng.randint(low, high)
    if whole:  # each whole number its share of the log axis around it
        return min(high, max(low, round(math.exp(rng.uniform(math.log(low - 0.5), math.log(high + 0.5))))))
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if spec.get("log") else rng.uniform(low, high)
    return _round(value, low, high)


def _as_number(value):
    """YAML reads 1e-4 (no dot) as a string: a range's bounds are numbers all the same."""
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _round(value: float, low: float, high: float) -> float:
    """`value` to 3 significant digits, or to as many more as keep it within [low, high]."""
    for digits in range(3, 18):
        rounded = float(f"{value:.{digits}g}")
        if low <= rounded <= high:
            return rounded
    return value


def _text(value) -> str:
    """A spec value as a command-line override reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def _trial_name(index: int, chosen: dict) -> str:
    """`003-loss=asl-lr=0.0001`: the index, then each varied key's last part and its value (safe characters)."""
    parts = [f"{key.rsplit('.', 1)[-1]}={_text(value)}" for key, value in chosen.items()]
    name = re.sub(r"[^A-Za-z0-9=._+-]", "_", "-".join([f"{index:03d}", *parts]))
    return name[:100]


def _validate(sweep: Sweep, trial: Trial) -> dict:
    """The trial's config as launch/train.py would load it (as a dict); UsageError naming the spec and trial."""
    bad = next((override for override in trial.overrides if re.search(r"\s", override)), None)
    if bad is not None:
        raise UsageError(f"{sweep.path}: {bad!r}: a value with spaces cannot travel to a SLURM job's command line; "
                         "rename the path or value without spaces")
    try:
        return config.load(sweep.variant, overrides=trial.overrides, smoke=sweep.smoke or None).to_dict()
    except UsageError as err:
        raise UsageError(f"{sweep.path}: trial {trial.name}: {err}") from None
