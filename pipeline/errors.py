"""The base of errors a person can act on: the CLI prints their message as it is."""


class MedtfxError(Exception):
    """An error whose message names the file, record, field or check at fault."""


class ConfigError(MedtfxError):
    """A configuration file or override that does not fit the schema."""
