"""The config's serving: section: how many versions the serving directory keeps, and the
warm-up requests and load check each packaged model gets before it is pushed."""

from __future__ import annotations

from modules.settings_base import Settings


class ServingConfig(Settings):
    # Pushed versions kept in the serving directory (the oldest go first); `medtfx
    # rollback` can return to any of them.
    keep_versions: int = 5
    # Evaluation examples in each pushed model's TF Serving warm-up requests
    # (assets.extra/tf_serving_warmup_requests): one request of this many per signature.
    warmup_examples: int = 4
    # The load check before push: seconds a fresh process may take to load the packaged
    # model and answer every warm-up request; a model that does not is not pushed.
    load_check_timeout: float = 300.0
