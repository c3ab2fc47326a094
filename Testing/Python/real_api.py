"""What Python can reach of a real Slicer, CTK or Qt class, read from the real sources: Slicer's and CTK's
headers (../shared/reference/slicer-api, or $SLICER_API_ROOT) for their classes, PySide6 for Qt's.

PythonQt exposes of a C++ class only its `public slots`, `Q_INVOKABLE` methods, `Q_PROPERTY`s (as
attributes: a property hides a method of the same name) and `signals`, and the same of its bases; Qt's own
classes it wraps almost entirely, as PySide6 does. `api("qMRMLPlotWidget")` follows the header's base classes
down to Qt's. Nothing here is typed by hand: every name comes from a header or from PySide6.
"""
from __future__ import annotations

import ast
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("SLICER_API_ROOT", REPO.parent / "shared" / "reference" / "slicer-api"))
UTIL_PY = REFERENCE / "Slicer" / "Base" / "Python" / "slicer" / "util.py"


@dataclass
class ClassAPI:
    """One class with its bases: what Python can call (methods), read and write as attributes
    (properties, name -> C++ type) and connect to (signals, as normalized signatures)."""
    name: str
    methods: set[str] = field(default_factory=set)
    properties: dict[str, str] = field(default_factory=dict)
    signals: set[str] = field(default_factory=set)
    returns: dict[str, str] = field(default_factory=dict)  # method -> the class it returns (headers only)
    unresolved: list[str] = field(default_factory=list)  # bases found neither in a header nor in PySide6

    def callables(self) -> set[str]:
        """Names that are methods from Python: a property of the same name wins in PythonQt."""
        return self.methods - set(self.properties)

    def merge(self, base: ClassAPI) -> None:
        self.methods |= base.methods
        self.signals |= base.signals
        self.properties = {**base.properties, **self.properties}
        self.returns = {**base.returns, **self.returns}
        self.unresolved += base.unresolved


# ----------------------------------------------------------------------------------------- headers
def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _balanced(text: str, start: int, opening: str, closing: str) -> int:
    """The index just past the bracket that closes the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        depth += (text[i] == opening) - (text[i] == closing)
        if depth == 0:
            return i + 1
    raise ValueError("unbalanced brackets")


def normalizeSignature(name: str, parameters: str) -> list[str]:
    """Qt's normalized signatures of a declaration: `f(const QString& text, int n = 0)` gives
    `f(QString,int)` and, for the default argument, `f(QString)`."""
    types, defaults = [], 0
    for parameter in (p.strip() for p in _split_parameters(parameters)):
        if not parameter or parameter == "void":
            continue
        declaration, hasDefault, _ = parameter.partition("=")
        defaults += bool(hasDefault)
        declaration = re.sub(r"\bconst\b", " ", declaration).replace("&", " ")
        tokens = re.findall(r"[\w:]+(?:<[^>]*>)?|\*", declaration)
        if len(tokens) > 1 and re.fullmatch(r"[A-Za-z_]\w*", tokens[-1]) and tokens[-2] not in ("unsigned", "signed"):
            tokens = tokens[:-1]  # the parameter's name
        types.append("".join(t if t == "*" else (" " + t) for t in tokens).strip().replace(" *", "*"))
    return [f"{name}({','.join(types[:len(types) - k])})" for k in range(defaults + 1)]


def _split_parameters(parameters: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in parameters:
        depth += (char in "<(") - (char in ">)")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return parts + [current]


SECTION = re.compile(r"^\s*(?:(public|protected|private)\s*(slots|Q_SLOTS)?|(signals|Q_SIGNALS))\s*:(?!:)")
MACROS = re.compile(r"\b(?:Q_OBJECT|QVTK_OBJECT|Q_GADGET)\b|\b(?:Q_ENUMS?|Q_FLAGS?|Q_DECLARE_\w+|Q_DISABLE_COPY|"
                    r"Q_CLASSINFO)\s*\([^)]*\)\s*;?")


def parse_header(path: Path) -> dict[str, tuple[list[str], ClassAPI]]:
    """The classes a header defines: name -> (base class names, own API)."""
    text = _strip_comments(path.read_text(errors="replace"))
    classes = {}
    for match in re.finditer(r"\bclass\s+(?:[A-Z_][A-Z0-9_]*\s+)?(\w+)\s*(?::\s*([^{;]*))?\{", text):
        name, bases = match.group(1), match.group(2) or ""
        end = _balanced(text, match.end() - 1, "{", "}")
        body = text[match.end():end - 1]
        own = ClassAPI(name)
        for prop in re.finditer(r"\bQ_PROPERTY\s*\(", body):
            content = body[prop.end():_balanced(body, prop.end() - 1, "(", ")") - 1]
            words = content.split()
            keyword = next(i for i, w in enumerate(words) if w in ("READ", "MEMBER", "WRITE"))
            own.properties[words[keyword - 1]] = " ".join(words[:keyword - 1])
        body = re.sub(r"\bQ_PROPERTY\s*\((?:[^()]|\([^()]*\))*\)", " ", body)
        body = MACROS.sub(" ", body)
        # drop nested blocks (inline bodies, enums, nested classes): only declarations stay
        flat, depth = "", 0
        for char in body:
            if char == "{":
                depth += 1
                flat += ";" if depth == 1 else ""
            elif char == "}":
                depth -= 1
            elif depth == 0:
                flat += char
        section = "private"  # a class starts private
        for statement in flat.split(";"):
            while (label := SECTION.match(statement)) is not None:
                section = "signals" if label.group(3) else label.group(1) + (" slots" if label.group(2) else "")
                statement = statement[label.end():]
            declaration = re.search(r"([~\w]+)\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)\s*(?:const)?", statement)
            if declaration is None or declaration.group(1) in (name, "~" + name):
                continue
            method, parameters = declaration.group(1), declaration.group(2)
            invokable = "Q_INVOKABLE" in statement
            if section == "signals":
                own.signals.update(normalizeSignature(method, parameters))
            elif section == "public slots" or (invokable and section.startswith("public")):
                own.methods.add(method)
                returned = re.search(r"(\w+)\s*\*\s*" + re.escape(method) + r"\s*\(", statement)
                if returned:
                    own.returns[method] = returned.group(1)
        classes[name] = ([b.split()[-1] for b in bases.split(",") if b.strip()], own)
    return classes


@functools.lru_cache(maxsize=None)
def _header_classes() -> dict:
    classes = {}
    for path in sorted(REFERENCE.rglob("*.h")):
        classes.update(parse_header(path))
    return classes


# --------------------------------------------------------------------------------------------- Qt
@functools.lru_cache(maxsize=None)
def _qt_class(name: str):
    from PySide6 import QtCore, QtGui, QtWidgets

    return next((getattr(m, name) for m in (QtWidgets, QtGui, QtCore) if hasattr(m, name)), None)


def _qt_api(name: str) -> ClassAPI | None:
    from PySide6.QtCore import QMetaMethod

    cls = _qt_class(name)
    if cls is None:
        return None
    api = ClassAPI(name)
    meta = getattr(cls, "staticMetaObject", None)
    if meta is not None:
        api.properties = {meta.property(i).name(): meta.property(i).typeName() for i in range(meta.propertyCount())}
        for i in range(meta.methodCount()):
            method = meta.method(i)
            if method.methodType() == QMetaMethod.MethodType.Signal:
                api.signals.add(bytes(method.methodSignature()).decode())
    signalNames = {s.split("(")[0] for s in api.signals}
    api.methods = {n for n in dir(cls) if not n.startswith("_") and n not in signalNames and callable(getattr(cls, n))}
    return api


# ------------------------------------------------------------------------------------------ lookup
@functools.lru_cache(maxsize=None)
def api(name: str) -> ClassAPI:
    """The class `name` with everything it inherits; a base found nowhere is listed in `unresolved`."""
    headers = _header_classes()
    if name in headers:
        bases, own = headers[name]
        result = ClassAPI(name, set(own.methods), dict(own.properties), set(own.signals), dict(own.returns))
        for base in bases:
            result.merge(api(base))
        return result
    qt = _qt_api(name)
    return qt if qt is not None else ClassAPI(name, unresolved=[name])


def known(name: str) -> bool:
    return name in _header_classes() or _qt_class(name) is not None


def available() -> bool:
    return REFERENCE.is_dir()


# --------------------------------------------------------------------------------------- slicer.util
@functools.lru_cache(maxsize=None)
def util_functions() -> dict[str, ast.FunctionDef | ast.ClassDef]:
    """slicer/util.py's top-level functions and classes, by name (read as a syntax tree: it needs Slicer to
    import)."""
    tree = ast.parse(UTIL_PY.read_text(encoding="utf-8"))
    return {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def forwards_kwargs_to(function: str, sink: str, seen: frozenset = frozenset()) -> bool:
    """Whether util.`function` passes its **kwargs on, call by call, to util.`sink`."""
    node = util_functions().get(function)
    if not isinstance(node, ast.FunctionDef) or node.args.kwarg is None or function in seen:
        return False
    kwargs = node.args.kwarg.arg
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
        passes = any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == kwargs for k in call.keywords)
        if passes and (call.func.id == sink or forwards_kwargs_to(call.func.id, sink, seen | {function})):
            return True
    return False


def util_parameters(function: str) -> tuple[list[str], bool]:
    """The parameter names of util.`function` (positional first) and whether it takes **kwargs."""
    node = util_functions()[function]
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return names, args.kwarg is not None
