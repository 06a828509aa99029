"""Custom TFX components and executors."""

import modules  # noqa: F401  (chooses Keras 2 before TensorFlow is imported)


def __getattr__(name: str):
    """`components.Submission`: the import path TFX's Kubeflow entrypoint takes from the
    artifact type's name (a KFP schema title has room for one module: `package.Class`)."""
    if name == "Submission":
        from components.submission_writer import Submission
        return Submission
    raise AttributeError(f"module 'components' has no attribute {name!r}")
