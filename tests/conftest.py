"""Shared fixtures (small generated datasets) and the `slow` marker."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs the whole pipeline (minutes); "
                            "deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """300 labelled 32 px images in 15 triple-stratified shards, plus 4 test shards."""
    from pipeline.sample.synth import SynthSpec, generate

    root = str(tmp_path_factory.mktemp("tiny-data"))
    generate(root, SynthSpec(images=300, size=32, seed=7, malignant_share=0.3))
    return root
