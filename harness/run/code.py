"""The code of a job: the repository files its command imports, found statically, and their hash.

Every rule runs `python -m harness <command>`; the dispatcher (`harness/__main__.py`, `harness/cli.py`) hands the
command to its handler, a function in a role's `commands` module. A job's code is

* the dispatcher's two files (their own imports of the other commands' modules are not followed: they only build
  the command line);
* the handler's module with what it imports at module level and what the handler function itself imports;
* for a job of a run (train, a pre-training stage, predict, run_config), the method's file `methods/<method>.py`;
* and everything those reach: every `import` of every reached module, at any depth and inside functions too (a
  module is one unit: editing any of its functions reruns what reaches it), package `__init__.py` files included,
  plus the package data files a reached module names (`"published.csv"`, `"la_manifest.csv"`).

Only files of the repository's packages (`harness`, `methods`) count; dynamic imports (the method registry's
`importlib`) are not followed, which is why a job names its method. The hash is a Snakemake `params` of each rule
(editing `harness/evaluate/metrics.py` reruns evaluate and the reports, never training; editing one method's file
reruns that method's runs) and is recorded, with the file list, in the job's outputs. No torch import.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: The project root (holds harness/ and methods/).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: The repository's Python packages; imports of anything else (torch, numpy, the standard library) are not code here.
PACKAGES = ("harness", "methods")
#: Every command starts in these files; they only dispatch, so what they import is not followed.
DISPATCHER = ("harness/__main__.py", "harness/cli.py")


@dataclass(frozen=True)
class CodeIdentity:
    """The files a job's command reaches (paths relative to the project root, sorted) and their hash."""

    sha256: str
    files: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"sha256": self.sha256, "files": list(self.files)}


def code_identity(entry: str, method: str | None = None, root: Path = PROJECT_ROOT) -> CodeIdentity:
    """The code of a job whose command is handled by `entry` (`"harness.train.commands:cmd_train"`), plus the method
    file of `method` (a variant's base method) for a job of a run. Computed again whenever a file changed."""
    root = Path(root).resolve()
    return _identity(root, _stamp(root), entry, method)


def _stamp(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of every file of the packages: a change of any file invalidates the caches below."""
    stamp = []
    for package in PACKAGES:
        for path in (root / package).rglob("*"):
            if "__pycache__" not in path.parts and path.is_file():
                stat = path.stat()
                stamp.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(stamp))


@cache
def _identity(root: Path, stamp: tuple, entry: str, method: str | None) -> CodeIdentity:
    graph = _graph(root, stamp)
    module, _, function = entry.partition(":")
    start = graph.modules_to_files({module, *graph.entry_imports(module, function)})
    if method is not None:
        method_file = root / "methods" / f"{method}.py"
        if not method_file.is_file():
            raise FileNotFoundError(f"{method_file} does not exist: no method {method!r} in {root}")
        start |= graph.modules_to_files({f"methods.{method}"})  # with the package's __init__.py
    files = graph.closure(start, entry=graph.file_of(module))
    files |= {root / rel for rel in DISPATCHER if (root / rel).is_file()}
    files |= graph.data_files(files)
    rel = tuple(sorted(str(f.relative_to(root)) for f in files))
    digest = hashlib.sha256()
    for name in rel:
        digest.update(json.dumps([name, graph.file_sha256(root / name)]).encode())
    return CodeIdentity(digest.hexdigest(), rel)


@cache
def _graph(root: Path, stamp: tuple) -> ModuleGraph:
    return ModuleGraph(root)


class ModuleGraph:
    """The repository's modules (`harness.train.loop` → its file) and the repository modules each one imports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules: dict[str, Path] = {}
        self.data: dict[str, list[Path]] = {}
        for package in PACKAGES:
            for path in sorted((root / package).rglob("*")):
                if not path.is_file() or "__pycache__" in path.parts:
                    continue
                if path.suffix == ".py":
                    parts = path.relative_to(root).with_suffix("").parts
                    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                    self.modules[name] = path
                elif path.suffix != ".pyc":
                    self.data.setdefault(path.name, []).append(path)
        self._trees: dict[Path, ast.Module] = {}
        self._sha256: dict[Path, str] = {}

    def file_sha256(self, path: Path) -> str:
        if path not in self._sha256:
            self._sha256[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        return self._sha256[path]

    def file_of(self, module: str) -> Path | None:
        return self.modules.get(module)

    def tree(self, path: Path) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        return self._trees[path]

    def entry_imports(self, module: str, function: str) -> set[str]:
        """What module `module` imports at module level, plus what its function `function` imports."""
        path = self.file_of(module)
        if path is None:
            raise ValueError(f"no module {module} in {self.root}")
        tree = self.tree(path)
        names = _imports(tree.body, module, path.name == "__init__.py", deep=False)
        body = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function]
        if function and not body:
            raise ValueError(f"{path} defines no function {function}")
        return names | _imports(body, module, False, deep=True)

    def modules_to_files(self, names: Iterable[str]) -> set[Path]:
        """The files of the repository modules among `names` and of their parent packages."""
        files = set()
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                path = self.modules.get(".".join(parts[:i]))
                if path is not None:
                    files.add(path)
        return files

    def closure(self, start: set[Path], entry: Path | None = None) -> set[Path]:
        """`start` and every repository file it imports, transitively (imports anywhere in a module count, except in
        the `entry` module: its imports that count are in `start` already)."""
        by_file = {path: name for name, path in self.modules.items()}
        seen: set[Path] = set()
        todo = list(start)
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            if path == entry:
                continue
            name = by_file.get(path, "")
            tree = self.tree(path)
            todo += self.modules_to_files(_imports(tree.body, name, path.name == "__init__.py", deep=True))
        return seen

    def data_files(self, files: Iterable[Path]) -> set[Path]:
        """Non-Python files of the packages whose name a module of `files` writes as a string (`"published.csv"`)."""
        found = set()
        for path in files:
            for node in ast.walk(self.tree(path)):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.update(self.data.get(Path(node.value).name, ()) if "." in node.value else ())
        return found


def _imports(body: list[ast.stmt], module: str, is_package: bool, *, deep: bool) -> set[str]:
    """Absolute names of the modules imported by the statements of `body` (inside functions and classes too when
    `deep`); `from a import b` names `a` and `a.b` (b may be a module)."""
    nodes = [n for stmt in body for n in ast.walk(stmt)] if deep else body
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            if base:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {n for n in names if n.split(".")[0] in PACKAGES}


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])
