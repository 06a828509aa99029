"""The base of every config section, so that sections owned by different modules load alike."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    """A section of settings: unknown keys refused; numbers, strings and bools as YAML
    gives them (a number is accepted where a string is expected, e.g. a memory of 16)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True,
                              coerce_numbers_to_str=True)
