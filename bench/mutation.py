"""Mutation testing of emodist's pure core: does a test fail when the code is wrong?

    python bench/mutation.py                      # every module of the core (tens of minutes on 2 cores)
    python bench/mutation.py metrics sampling     # some of them
    python bench/mutation.py --list               # the modules and the tests that guard each

Needs mutmut 3 (`pip install 'mutmut>=3.3'`: a tool of this benchmark, not of emodist).

mutmut (3.x) changes the code one small edit at a time (a `<` for a `<=`, a constant, a dropped
argument...) and runs the tests that call the changed function; a mutant the tests let pass "survived".
The core is the code whose answers are numbers and verdicts: metrics, threshold tuning, the length
sampler, config parsing and validation, the data parsers, checkpoint completeness and fingerprints, and
the run directory's safety checks. Each is guarded by the in-process tests listed in MODULES (tests that
start training processes would not see a mutant: those import the unchanged package).

The work happens in a copy of the tracked files under bench/out/mutation/ (mutmut writes its `mutants/`
beside the code it mutates), so the repository is left as it is. Printed: the surviving mutants with their
diffs (also in bench/out/mutation/survivors.txt, and one row each in survivors.md: the table of
bench/RESULTS.md, each with its verdict from bench/mutation_verdicts.txt), a count per module, how many
survivors have no verdict yet, and last:
    mutation score: NN.N% (killed K of N)
where N counts every mutant but those mutmut could not run at all, and mutants no test reaches count as
survivors. A timeout counts as killed (the mutant made a test loop). Exit status 0 when the score is at
least --target (85 by default).
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "out" / "mutation"
VERDICTS = ROOT / "bench" / "mutation_verdicts.txt"

# part of the core -> (the tests that guard it, in this process; {file under emodist/: the functions and classes
# of the core in it, or None: all of it})
MODULES = {
    "metrics": (["tests/test_metrics.py", "tests/test_thresholds.py"], {"scoring/metrics.py": None}),
    "thresholds": (["tests/test_thresholds.py", "tests/test_metrics.py"], {"scoring/thresholds.py": None}),
    "sampling": (["tests/test_sampling.py"], {"data/sampling.py": None}),
    "config": (["tests/test_config.py", "tests/test_fuzz.py"],
               {"config/schema.py": None, "config/rules.py": None, "config/loading.py": None}),
    # the readers of the data files and the splits (the hub loaders need the network, tokenization a
    # tokenizer and `datasets`: tests/test_train.py's launches)
    "data": (["tests/test_data.py", "tests/test_fuzz.py"],
             {"data/sets.py": None, "data/synthetic.py": None, "data/grouping.py": None,
              "data/readers.py": ["load", "detect", "_load_goemotions_dir", "_goemotions_rows", "_load_semeval_dir",
                                  "_semeval_rows"],
              "data/tables.py": None, "data/rows.py": None,
              "runtime/files.py": ["cache_root"]}),
    # completeness and fingerprints (saving and loading need a launch: tests/test_resume.py)
    "checkpointing": (["tests/test_checkpointing.py", "tests/test_fuzz.py", "tests/test_rundir_checks.py"],
                      {"rundir/timeline.py": None, "rundir/fingerprint.py": None,
                       "rundir/checkpoints.py": ["read_state", "unusable", "latest_checkpoint", "_describe_file", "_digest"]}),
    # what each way of starting may do with the files there (open_run's broadcast needs a launch)
    "rundir": (["tests/test_rundir_checks.py"],
               {"rundir/contract.py": ["_open", "_decide", "_saved_config", "_get", "_finished_step", "default_run_dir",
                              "move_aside", "_remove", "Run", "Contents"],
                "runtime/files.py": ["write_json", "_finite"]}),
}
KILLED = {"killed", "timeout"}
NOT_RUN = {"skipped", "not checked", "caught by type check"}
LINE = re.compile(r"^\s*(emodist\.\S+__mutmut_\d+): (.+)$")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--list", action="store_true", help="the modules and their tests, then exit")
    parser.add_argument("--target", type=float, default=85.0, help="the score to reach, in %% (default 85)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1,
                        help="mutants run side by side (default: the number of cores)")
    args = parser.parse_args(argv)
    if args.list:
        for module, (tests, files) in MODULES.items():
            parts = [f"emodist/{file}" + (f" ({', '.join(names)})" if names else "") for file, names in files.items()]
            print(f"{module:14} {'; '.join(parts)} <- {' '.join(tests)}")
        return 0
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"no module {', '.join(unknown)} in the core: choose from {', '.join(MODULES)}")
    if importlib.util.find_spec("mutmut") is None:
        print("mutation: mutmut is not installed here: pip install 'mutmut>=3.3'", file=sys.stderr)
        return 2
    modules = args.modules or list(MODULES)
    tests = sorted({test for module in modules for test in MODULES[module][0]})
    chosen = [glob for module in modules for glob in globs(module)]

    prepare(sorted({file for module in modules for file in MODULES[module][1]}), tests)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *chosen],
                         cwd=WORK, env=env)
    if run.returncode != 0:
        print(f"mutation: mutmut run exited {run.returncode} (its output is above)", file=sys.stderr)
        return 1
    results = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=WORK, env=env,
                             capture_output=True, text=True, check=True).stdout
    status = {m[1]: m[2].strip() for line in results.splitlines()
              if (m := LINE.match(line)) and any(fnmatch.fnmatchcase(m[1], glob) for glob in chosen)}
    return report(status, env, args.target)


def globs(module: str) -> list[str]:
    """mutmut's names for the mutants of `module` in the core: emodist.<dotted file>.x_<function>__mutmut_<n>
    and emodist.<dotted file>.xǁ<Class>ǁ<method>__mutmut_<n>."""
    out = []
    for file, names in MODULES[module][1].items():
        dotted = "emodist." + file.removesuffix(".py").replace("/", ".")
        if names is None:
            out.append(f"{dotted}.*")
        else:
            out += [f"{dotted}.xǁ{name}ǁ*" if name[0].isupper() else f"{dotted}.x_{name}__mutmut_*" for name in names]
    return out


def module_of(name: str) -> str:
    """The part of the core a mutant belongs to."""
    return next(module for module in MODULES if any(fnmatch.fnmatchcase(name, glob) for glob in globs(module)))


def prepare(files: list[str], tests: list[str]) -> None:
    """WORK: the tracked files of the repository, with mutmut's settings added to its pyproject.toml."""
    shutil.rmtree(WORK, ignore_errors=True)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in filter(None, tracked.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (WORK / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, WORK / name)
    quoted = lambda items: "[" + ", ".join(f'"{item}"' for item in items) + "]"  # noqa: E731
    settings = f"""
[tool.mutmut]
source_paths = ["emodist"]
only_mutate = {quoted(f"emodist/{file}" for file in files)}
pytest_add_cli_args_test_selection = {quoted(tests)}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
"""
    with open(WORK / "pyproject.toml", "a", encoding="utf-8") as pyproject:
        pyproject.write(settings)


def report(status: dict[str, str], env: dict, target: float) -> int:
    counted = {name: state for name, state in status.items() if state not in NOT_RUN}
    killed = sum(state in KILLED for state in counted.values())
    survivors = sorted(name for name, state in counted.items() if state not in KILLED)
    lines = []
    for name in survivors:
        diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=WORK, env=env,
                              capture_output=True, text=True).stdout
        lines += [diff.rstrip() or f"# {name}: {counted[name]}", ""]  # mutmut's diff starts with that line
    (WORK / "survivors.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    verdicts = read_verdicts(VERDICTS)
    (WORK / "survivors.md").write_text(survivor_table(lines, verdicts), encoding="utf-8")
    print("\n".join(lines))
    per_module = Counter(module_of(name) for name in counted)
    alive = Counter(module_of(name) for name in survivors)
    for module in sorted(per_module):
        done = per_module[module] - alive[module]
        print(f"{module:14} killed {done} of {per_module[module]} ({100 * done / per_module[module]:.1f}%)")
    unjudged = [name for name in survivors if verdict_of(name.removeprefix("emodist."), verdicts) is None]
    print(f"survivors without a verdict in {VERDICTS.relative_to(ROOT)}: {len(unjudged)} of {len(survivors)}"
          + "".join(f"\n  {name}" for name in unjudged))
    if not counted:
        print("mutation score: none (no mutant ran)")
        return 1
    score = 100 * killed / len(counted)
    print(f"mutation score: {score:.1f}% (killed {killed} of {len(counted)})")
    return 0 if score >= target else 1


def read_verdicts(path: Path) -> list[tuple[str, str]]:
    """(pattern, verdict) pairs of the verdicts file: `PATTERN  VERDICT` a line, PATTERN a mutant's name
    without `emodist.` (fnmatch wildcards: `config.x_dump__mutmut_*`); `#` starts a comment line."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            pattern, _, verdict = line.partition("  ")
            if not verdict.strip():
                raise SystemExit(f"{path}:{number}: write PATTERN, two spaces, then the verdict")
            pairs.append((pattern.strip(), verdict.strip()))
    return pairs


def verdict_of(name: str, verdicts: list[tuple[str, str]]) -> str | None:
    """The verdict of the first pattern that matches `name`."""
    return next((verdict for pattern, verdict in verdicts if fnmatch.fnmatchcase(name, pattern)), None)


def survivor_table(diffs: list[str], verdicts: list[tuple[str, str]]) -> str:
    """One markdown row per surviving mutant: its name, the line as written and as mutated (the first changed
    line of each side of mutmut's diff) and its verdict, for bench/RESULTS.md."""
    rows = ["| mutant | written | mutated | verdict |", "|---|---|---|---|"]
    cell = lambda text: "`" + " ".join(text.split()).replace("|", "\\|").replace("`", "'") + "`"  # noqa: E731
    for block in "\n".join(diffs).split("\n# "):
        lines = block.lstrip("# ").splitlines()
        if not lines:
            continue
        name = lines[0].split(":")[0].removeprefix("emodist.")
        old = next((line[1:] for line in lines if line.startswith("-") and not line.startswith("---")), "")
        new = next((line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")), "")
        rows.append(f"| {name} | {cell(old)} | {cell(new)} | {verdict_of(name, verdicts) or ''} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
