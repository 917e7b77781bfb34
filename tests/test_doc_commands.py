"""Every command in README.md and docs/ is valid: files exist, subcommands and flags are accepted.

Commands are read from fenced shell blocks (whole commands: every path they name must exist, unless it is a
placeholder such as ``<job>``, ``...`` or an upper-case name) and from inline code spans (a mention such as
``vlamix run -f``: the subcommand and its flags must exist). Checked: ``vlamix`` (and ``torchrun -m vlamix.cli``)
against the CLI's own argparse parser; ``python benchmarks/X.py`` / ``python scripts/X.py`` against the script's
``--help``; ``python -m MODULE`` against importability; ``bash scripts/X.sh`` / ``bash .ci/run`` against the file
and its text (flags); ``ianvs -f FILE`` against the file.
"""

import argparse
import functools
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

from vlamix.cli import build_parser

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DOCS = ["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
PROGRAMS = ("vlamix", "python", "bash", "torchrun", "ianvs")
FENCE = re.compile(r"^```(bash|sh|shell|console)?\s*$")


def _is_placeholder(token: str) -> bool:
    return "<" in token or "..." in token or "*" in token or bool(re.fullmatch(r"[A-Z][A-Z_:0-9]*", token))


def _commands(path: str) -> list[tuple[str, int, str, bool]]:
    """(file, line, command, whole) of every command in ``path``; whole: from a fenced shell block."""
    out = []
    with open(os.path.join(REPO, path), encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    fenced, lang, pending = False, None, ""
    for number, line in enumerate(lines, 1):
        if m := FENCE.match(line.strip()):
            fenced, lang = (not fenced), (m.group(1) if not fenced else None)
            continue
        if fenced:
            if lang is None and not line.lstrip().startswith(tuple(PROGRAMS) + (".venv/",)):
                continue
            text = pending + line.split(" #")[0].rstrip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            for part in re.split(r"\s*&&\s*", text.strip()):
                if part.split(" ")[0].replace(".venv/bin/", "") in PROGRAMS:
                    out.append((path, number, part, True))
        else:
            for span in re.findall(r"`([^`]+)`", line):
                for part in re.split(r"\s*&&\s*", span.strip()):
                    if part.split(" ")[0].replace(".venv/bin/", "") in PROGRAMS and " " in part:
                        out.append((path, number, part, False))
    return out


ALL = [c for doc in DOCS for c in _commands(doc)]


def test_the_docs_hold_the_commands_we_expect():
    texts = [c[2] for c in ALL]
    assert any(t.startswith("bash scripts/run_default_grid.sh") for t in texts)
    assert any("vlamix check -f" in t for t in texts) and any(t.startswith("ianvs -f examples/") for t in texts)
    assert len(ALL) > 40


@functools.lru_cache(maxsize=None)
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@functools.lru_cache(maxsize=None)
def _script_help(script: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "examples", "cloud_VLA_finetune")}
    proc = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{script} --help failed: {proc.stderr[-500:]}"
    return proc.stdout


def _flags(tokens: list[str]) -> list[str]:
    return [t.split("=")[0] for t in tokens if t.startswith("-") and not re.fullmatch(r"-?\d+(\.\d+)?", t)]


def _check_paths(tokens: list[str], whole: bool) -> list[str]:
    problems = []
    for t in tokens:
        looks_like_path = "/" in t and re.search(r"\.(ya?ml|py|sh|txt|md|json)$", t) or t.startswith(("examples/", "scripts/", "benchmarks/", "docs/"))
        if looks_like_path and not _is_placeholder(t) and not t.startswith(("runs/", "models/", "data/", "workspace/")):
            if whole or t.startswith(("examples/", "scripts/", "benchmarks/")):
                if not os.path.exists(os.path.join(REPO, t)):
                    problems.append(f"no such file {t}")
    return problems


def check_command(text: str, whole: bool) -> list[str]:
    """Problems of one command (empty when it is valid)."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError as err:
        return [f"unparseable: {err}"]
    program = tokens[0].replace(".venv/bin/", "")
    args = tokens[1:]
    if program == "torchrun":
        if "-m" not in args or args[args.index("-m") + 1] != "vlamix.cli":
            return ["torchrun runs -m vlamix.cli"]
        program, args = "vlamix", args[args.index("-m") + 2:]
    problems = _check_paths(args, whole)
    if program == "vlamix":
        subs = _subparsers()
        if not args or args[0] not in subs:
            return problems + [f"unknown subcommand {args[:1]} (have {sorted(subs)})"]
        known = {s for a in subs[args[0]]._actions for s in a.option_strings}
        problems += [f"vlamix {args[0]}: unknown flag {f}" for f in _flags(args[1:]) if f not in known]
    elif program == "python":
        if args[:1] == ["-m"]:
            module = args[1]
            if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
                problems.append(f"no module {module}")
        elif args and args[0].endswith(".py"):
            if not os.path.isfile(os.path.join(REPO, args[0])):
                return problems + [f"no such script {args[0]}"]
            helptext = _script_help(args[0])
            problems += [f"{args[0]}: unknown flag {f}" for f in _flags(args[1:]) if f not in helptext]
    elif program == "bash":
        script = os.path.join(REPO, args[0]) if args else ""
        if not os.path.isfile(script):
            return problems + [f"no such script {args[:1]}"]
        with open(script, encoding="utf-8") as fh:
            body = fh.read()
        problems += [f"{args[0]}: unknown flag {f}" for f in _flags(args[1:]) if f not in body]
    elif program == "ianvs":
        if "-f" in args and whole and not _is_placeholder(args[args.index("-f") + 1]):
            if not os.path.isfile(os.path.join(REPO, args[args.index("-f") + 1])):
                problems.append(f"ianvs -f: no such file {args[args.index('-f') + 1]}")
    return problems


@pytest.mark.parametrize("doc,line,command,whole", ALL, ids=[f"{d}:{n}" for d, n, _, _ in ALL])
def test_command_is_valid(doc, line, command, whole):
    assert check_command(command, whole) == [], f"{doc}:{line}: {command}"


@pytest.mark.parametrize("command, words", [
    ("vlamix run -f examples/none.yaml", ["no such file examples/none.yaml"]),
    ("vlamix rnu -f x.yaml", ["unknown subcommand"]),
    ("vlamix evaluate --checkpoint tiny --trails 3", ["unknown flag --trails"]),
    ("python benchmarks/cpu_7b_route.py --shrot", ["unknown flag --shrot"]),
    ("bash scripts/setup.sh --with-ianvz", ["unknown flag --with-ianvz"]),
    ("python -m vlamix.no_such_module", ["no module"]),
])
def test_the_checker_catches_broken_commands(command, words):
    problems = " ".join(check_command(command, whole=True))
    for word in words:
        assert word in problems
