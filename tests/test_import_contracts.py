"""The import structure of ``vlamix`` (issue 21): floors point down, no cycle, lazy imports only with a reason.

Three checks a wrong layout fails:

* ``lint-imports`` (import-linter, the ``.importlinter`` file at the repository root) keeps the layers contract
  and the forbidden contract (env-worker modules never load TensorFlow or torch), and the layers name every
  subpackage, so a new subpackage cannot sit outside the house.
* The module graph (grimp, the library import-linter is built on; imports inside functions counted, those under
  ``if TYPE_CHECKING:`` not) has no cycle. import-linter's layers contract alone allows a cycle inside one floor.
* An import inside a function is there only where a process must not load the module (TensorFlow or torch in
  MuJoCo env workers, an optional dependency, a heavy stack a light command never needs), and says so in a
  comment on its line or the line above.
"""

import ast
import configparser
import os
import subprocess
import sys

import grimp
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGE_ROOT = os.path.join(REPO, "examples", "cloud_VLA_finetune")
PACKAGE = os.path.join(PACKAGE_ROOT, "vlamix")


def _lint_imports() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([exe, "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_lint_imports_keeps_every_contract():
    out = _lint_imports()
    contracts = [s for s in _contracts().sections() if s.startswith("importlinter:contract:")]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in out


def _contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    assert parser.read(os.path.join(REPO, ".importlinter"))
    return parser


def test_the_layers_name_every_subpackage():
    layers = _contracts()["importlinter:contract:layers"]["layers"]
    named = {m.strip() for line in layers.splitlines() for m in line.split("|") if m.strip()}
    subpackages = {f"vlamix.{d}" for d in os.listdir(PACKAGE) if os.path.isfile(os.path.join(PACKAGE, d, "__init__.py"))}
    modules = {f"vlamix.{f[:-3]}" for f in os.listdir(PACKAGE) if f.endswith(".py") and f not in ("__init__.py", "__main__.py")}
    assert subpackages | modules <= named, f"outside every layer: {sorted((subpackages | modules) - named)}"


def _cycles(graph: "grimp.ImportGraph") -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if not w.startswith("vlamix"):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module.startswith("vlamix") and module not in index:
            visit(module)
    return sorted(found)


@pytest.fixture(scope="module")
def graph():
    sys.path.insert(0, PACKAGE_ROOT)
    try:
        return grimp.build_graph("vlamix", exclude_type_checking_imports=True, cache_dir=None)
    finally:
        sys.path.remove(PACKAGE_ROOT)


def test_the_module_graph_has_no_cycle_counting_function_level_imports(graph):
    assert len([m for m in graph.modules if m.startswith("vlamix.")]) > 80  # the whole package was read
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_cycle(graph):
    # the check above must be able to fail: plant eval.rollout -> pipeline.point (which imports eval.rollout)
    graph.add_import(importer="vlamix.eval.rollout", imported="vlamix.pipeline.point")
    try:
        assert any({"vlamix.pipeline.point", "vlamix.eval.rollout"} <= set(c) for c in _cycles(graph))
    finally:
        graph.remove_import(importer="vlamix.eval.rollout", imported="vlamix.pipeline.point")
    assert _cycles(graph) == []


def _function_level_imports(path: str) -> list[tuple[int, str]]:
    """(line, source line) of every import statement inside a function of ``path`` that has no comment on its
    line or the line above."""
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    lines = source.splitlines()
    missing = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                here, above = lines[sub.lineno - 1], lines[sub.lineno - 2].strip()
                if "#" not in here and not above.startswith("#"):
                    missing.append((sub.lineno, here.strip()))
    return sorted(set(missing))


def test_every_function_level_import_says_why():
    missing = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                found = _function_level_imports(path)
                if found:
                    missing[os.path.relpath(path, PACKAGE_ROOT)] = found
    assert missing == {}, "function-level imports without a reason comment:\n" + "\n".join(
        f"{p}:{line}: {text}" for p, items in sorted(missing.items()) for line, text in items)


def test_the_reason_check_flags_an_import_without_a_comment(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    import json\n\n    # torch only in the trainer process\n    import torch\n"
                    "    import os  # the worker must not load numpy\n")
    assert _function_level_imports(str(path)) == [(2, "import json")]


#: Files longer than this say in their module docstring why they are one file (issue 21), in a line starting "Size:".
MAX_LINES_WITHOUT_REASON = 600


def _long_files_without_a_reason(root: str) -> list[str]:
    """Paths (relative to ``root``) of the ``.py`` files over :data:`MAX_LINES_WITHOUT_REASON` lines whose module
    docstring has no line starting with ``Size:``."""
    found = []
    for folder, _, names in os.walk(root):
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if text.count("\n") <= MAX_LINES_WITHOUT_REASON:
                continue
            doc = ast.get_docstring(ast.parse(text)) or ""
            if not any(line.startswith("Size:") for line in doc.splitlines()):
                found.append(os.path.relpath(path, root))
    return sorted(found)


def test_every_long_module_says_why_it_is_one_file():
    assert _long_files_without_a_reason(PACKAGE) == []


def test_the_size_check_flags_a_long_module_without_a_reason(tmp_path):
    body = "\n".join(f"x{i} = {i}" for i in range(MAX_LINES_WITHOUT_REASON + 1))
    (tmp_path / "long.py").write_text('"""A long module."""\n' + body + "\n")
    (tmp_path / "long_ok.py").write_text('"""A long module.\n\nSize: one file because of a test.\n"""\n' + body + "\n")
    (tmp_path / "short.py").write_text('"""Short."""\nx = 1\n')
    assert _long_files_without_a_reason(str(tmp_path)) == ["long.py"]
