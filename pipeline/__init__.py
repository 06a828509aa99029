"""The pipeline: its definition, config and runners, and the data, results, operations
and command line around it."""

import modules  # noqa: F401  (chooses Keras 2 before TensorFlow is imported)
