"""Errors of the pipeline's own configuration."""

from modules.errors import MedtfxError


class ConfigError(MedtfxError):
    """A configuration file or override that does not fit the schema."""
