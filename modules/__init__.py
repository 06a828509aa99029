"""The model code shipped to Transform and the Trainer. Importing this package chooses
Keras 2 (tf_keras) for the whole project, before anything imports TensorFlow:
tf.Transform's layer, TFMA and TF Hub's KerasLayer are Keras 2 objects. `pipeline` and
`components` import this package first for the same reason."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
