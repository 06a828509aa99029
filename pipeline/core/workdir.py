"""The layout of a local work directory; nothing in it is overwritten in place."""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class WorkDir:
    root: str

    def path(self, *parts: str) -> str:
        return os.path.join(os.path.abspath(self.root), *parts)

    @property
    def pipeline_root(self) -> str:
        return self.path("pipeline")

    @property
    def metadata(self) -> str:
        return self.path("metadata.sqlite")

    @property
    def serving(self) -> str:
        return self.path("serving")

    @property
    def sample_data(self) -> str:
        return self.path("sample-data")

    @property
    def imports(self) -> str:
        """Shards imported from published layouts, one folder per version of the files."""
        return self.path("imports")

    @property
    def summary(self) -> str:
        return self.path("run_summary.json")

    @property
    def input_check_cache(self) -> str:
        return self.path("cache", "input-checks.json")

    def log_file(self, command: str, stamp: str) -> str:
        return self.path("logs", f"{command}-{stamp}.log")

