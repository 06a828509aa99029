"""Custom TFX components and executors."""

import modules  # noqa: F401  (chooses Keras 2 before TensorFlow is imported)
