"""Keeps TFDV 1.16 importable beside tfx-bsl 1.21 in every interpreter, Beam workers too.

TFDV 1.16 (pinned: no 1.21 wheel exists) imports `tfx_bsl.arrow.sql_util`, which tfx-bsl
1.21 removed. `import tfx` puts a stand-in in place, but Beam's worker processes unpickle
TFDV's DoFns before anything imports tfx, and StatisticsGen fails in multi-process mode. A
.pth file in site-packages calls `install()` at interpreter start-up: a finder of last resort
that supplies the module only when no real one exists. Nothing is imported eagerly.
Run `python -m pipeline.compat` once per environment (`make` and the Kubeflow image do).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import sysconfig
import types

MISSING_MODULE = "tfx_bsl.arrow.sql_util"
PTH_FILE = "medtfx-tfx-bsl-compat.pth"


class _StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != MISSING_MODULE:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        module = types.ModuleType(spec.name)

        def missing(name: str):
            raise AttributeError(f"{MISSING_MODULE}.{name}: tfx-bsl 1.21 has no SQL support; "
                                 "SQL-based slicing is unavailable in this environment")

        module.__getattr__ = missing
        return module

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(isinstance(finder, _StandIn) for finder in sys.meta_path):
        sys.meta_path.append(_StandIn())  # last: real modules always win


def write_pth(site_packages: str | None = None) -> str:
    path = os.path.join(site_packages or sysconfig.get_paths()["purelib"], PTH_FILE)
    with open(path, "w") as f:
        f.write("import pipeline.compat; pipeline.compat.install()\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write_pth()}")
