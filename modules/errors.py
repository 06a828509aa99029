"""The base of errors a person can act on: the CLI prints their message as it is.

It lives in the bottom layer so that the model code, the components and the pipeline can
all raise one.
"""


class MedtfxError(Exception):
    """An error whose message names the file, record, field or check at fault."""
