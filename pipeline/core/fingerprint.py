"""Code fingerprints that keep TFX's cache honest.

TFX keys a cached execution on its inputs and execution properties, which name an
executor or a user function by its import path, not by its source. Each component built
from project code therefore carries a fingerprint of every project file its executor can
run: the component's own module, all of `modules/` (the code shipped to Transform and the
Trainer), and the project modules they import, followed transitively. An edit to any of
them changes the component's properties, so it and everything downstream run again; an
edit elsewhere (the CLI, the report) leaves the cache alone.
"""

from __future__ import annotations

import ast
import hashlib
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROJECT_PACKAGES = ("modules", "components", "pipeline")


def module_file(module: str, root: str = REPO_ROOT) -> str | None:
    """The source file of a project module, or None when it is not one."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = os.path.join(root, *module.split("."))
    for path in (f"{base}.py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def imported_modules(path: str) -> set[str]:
    """Every module a file imports, including `from package import submodule`."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def project_closure(modules: tuple[str, ...], root: str = REPO_ROOT) -> list[str]:
    """The project files `modules` import, directly or not (parent packages included)."""
    seen: set[str] = set()
    pending = list(modules)
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            path = module_file(".".join(parts[:depth]), root)
            if path and path not in seen:
                seen.add(path)
                pending.extend(imported_modules(path))
    return sorted(seen)


def code_fingerprint(*entry_modules: str, root: str = REPO_ROOT) -> str:
    """A digest of `modules/` and of every project file the entry modules import. Read
    afresh on every call: a long `medtfx retrain --watch` must see edits too."""
    shipped = tuple(f"modules.{name[:-3]}" for name in os.listdir(os.path.join(root, "modules"))
                    if name.endswith(".py"))
    digest = hashlib.sha256()
    for path in project_closure(entry_modules + shipped, root):
        with open(path, "rb") as f:
            digest.update(os.path.relpath(path, root).encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]
