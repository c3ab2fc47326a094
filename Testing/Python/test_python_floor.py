"""The oldest supported Slicer, 5.8, runs Python 3.9; the module and the backend (which runs in Slicer's
Python too) must stay within it. No Python 3.9 can be installed here, so the check is static: `vermin`
finds the syntax, modules, functions and keyword arguments newer than 3.9, and an AST check finds what
vermin passes: a PEP 604 union (`str | None`) evaluated at run time, which raises TypeError on 3.9.
Annotations are evaluated when their function or class is defined unless the module starts with
`from __future__ import annotations`; the team's rule puts that line in every module whose annotations
use unions or builtin generics (PEP 604/585)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from conftest import MODULE_DIR, REPO

FLOOR = "3.9"
SOURCES = [MODULE_DIR, REPO / "DTCTraining" / "dtc_training"]
BUILTIN_TYPES = {"str", "int", "float", "bool", "bytes", "complex", "object", "list", "dict", "tuple", "set",
                 "frozenset", "type"}


def vermin(*paths) -> subprocess.CompletedProcess:
    pytest.importorskip("vermin", reason="vermin is in Testing/requirements.txt")
    return subprocess.run([sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", f"-t={FLOOR}-",
                           "--violations", "--no-tips", *map(str, paths)], capture_output=True, text=True, timeout=300)


def _isType(node) -> bool:
    """An operand that can only be a type: None, a builtin type, or a subscripted generic."""
    return ((isinstance(node, ast.Constant) and node.value is None) or
            (isinstance(node, ast.Name) and node.id in BUILTIN_TYPES) or isinstance(node, ast.Subscript))


def _unionOrGeneric(annotation) -> bool:
    return any((isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)) or
               (isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id in BUILTIN_TYPES)
               for n in ast.walk(annotation))


def evaluatedAnnotationProblems(path) -> list[str]:
    """Unions and builtin generics that Python 3.9 evaluates: in annotations of a module without
    `from __future__ import annotations` (parameters, returns, module and class variables; not the locals
    of a function body, which are never evaluated), and `X | Y` of types in code anywhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    postponed = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                    any(a.name == "annotations" for a in n.names) for n in tree.body)
    annotations = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            annotations += [a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs
                            + [args.vararg, args.kwarg] if a is not None and a.annotation is not None]
            annotations += [node.returns] if node.returns is not None else []
        elif isinstance(node, (ast.Module, ast.ClassDef)):
            annotations += [s.annotation for s in node.body if isinstance(s, ast.AnnAssign)]
    inAnnotations = {id(n) for a in annotations for n in ast.walk(a)}
    inAnnotations |= {id(n) for s in ast.walk(tree) if isinstance(s, ast.AnnAssign) for n in ast.walk(s.annotation)}
    problems = [f"{path.name} line {a.lineno}: annotation {ast.unparse(a)!r} is evaluated when defined: "
                "start the module with `from __future__ import annotations`"
                for a in annotations if not postponed and _unionOrGeneric(a)]
    problems += [f"{path.name} line {n.lineno}: {ast.unparse(n)!r} is a union of types (Python 3.10)"
                 for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)
                 and id(n) not in inAnnotations and (_isType(n.left) or _isType(n.right))]
    return problems


def test_vermin_finds_nothing_newer_than_the_floor():
    run = vermin(*SOURCES)
    assert run.returncode == 0 and f"Minimum required versions: {FLOOR}" in run.stdout, run.stdout + run.stderr


def test_vermin_reports_a_planted_newer_call(tmp_path):
    (tmp_path / "newer.py").write_text("def pairs(a, b):\n    return list(zip(a, b, strict=True))\n")
    run = vermin(tmp_path)
    assert run.returncode != 0 and "3.10" in run.stdout, run.stdout


def test_no_annotation_or_union_that_python_39_evaluates():
    files = [path for folder in SOURCES for path in sorted(folder.rglob("*.py"))]
    assert len(files) > 40
    problems = [problem for path in files for problem in evaluatedAnnotationProblems(path)]
    assert problems == []


def test_the_annotation_check_reports_what_vermin_passes(tmp_path):
    evaluated = tmp_path / "evaluated.py"
    evaluated.write_text("class InputError(ValueError):\n"
                         "    def __init__(self, problems: str | list[str]):\n"
                         "        self.problems = problems\n\n\n"
                         "def local():\n    names: list[str] | None = None\n    return names\n")
    postponed = tmp_path / "postponed.py"
    postponed.write_text("from __future__ import annotations\n\n\n"
                         "def check(value: str | None, kinds=(int,)) -> dict[str, int]:\n"
                         "    return isinstance(value, int | str)\n")
    assert vermin(evaluated).returncode == 0  # what vermin lets through
    assert evaluatedAnnotationProblems(evaluated) == [
        "evaluated.py line 2: annotation 'str | list[str]' is evaluated when defined: "
        "start the module with `from __future__ import annotations`"]
    assert evaluatedAnnotationProblems(postponed) == [
        "postponed.py line 5: 'int | str' is a union of types (Python 3.10)"]


def test_the_floor_is_the_one_the_package_and_the_documents_state():
    import tomllib

    project = tomllib.loads((REPO / "DTCTraining" / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == f">={FLOOR}"
    for name in ("README.md", "docs/slicer.md", "DTCSegmentation.s4ext", "CMakeLists.txt"):
        assert re.search(r"5\.8 (and|or) later", (REPO / name).read_text(encoding="utf-8")), name
