"""Grad-CAM: where in an image the served score comes from, as a heat map a reader can check.

The map is the last convolutional block's activations weighted by the gradient of the
served score (Selvaraju et al. 2017): the positive class's probability for a binary model;
for K classes the urgent classes' summed probability when the task names urgent classes
(the score the decision is taken on), else the top class's. The block is what the
backbone's global pooling averages, taken before any pooling layer in front of it (VGG's
block5_pool, the small CNNs' last max pool), so the map keeps the block's finest grid.

The gradient is that of the score's logarithm, computed in float32 from the last layer's
pre-activation: it differs from the score's own gradient by a positive factor per image, so
the normalised map is the same, and it does not vanish where a sigmoid or softmax saturates
(nor in float16 under mixed precision). A calibration applied after the network is
monotone, so it leaves the map unchanged too. The gradient runs back through the head and
the global pooling only, never through the backbone: a map costs about one forward pass.

An ensemble (components/ensemble.py) serves the mean of its members' scores; its map is the
sum of each member's map under the gradient of that mean, i.e. Grad-CAM over all members'
last blocks at once: the members' maps averaged, each weighted by its share of the score.
Member 0 alone would explain a score nobody is served. Only orientation 0 is explained:
test-time augmentation averages turned copies, whose maps would need turning back.

A hub backbone is one opaque layer with no block to read: such a model has no map.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from modules.preprocessing import declared_size
from modules.task import IMAGE_INPUT, METADATA_KEY, TaskSpec

HEATMAP_KEY = "heatmap"  # [B, H, W] in [0, 1]; H, W: the largest image of the request
HEIGHT_KEY = "height"  # [B] each image's own height: its map is heatmap[i, :height, :width]
WIDTH_KEY = "width"
SCORE_KEY = "score"  # [B] the score explained: orientation 0, before any calibration
_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_OUTPUT_LAYERS = ("probability", "probabilities")


def networks(model: keras.Model) -> list[keras.Model]:
    """The classifiers `model` serves: itself, or an ensemble's members."""
    names = [layer.name for layer in model.layers]
    if "backbone" in names:
        return [model]
    return [layer for layer in model.layers if isinstance(layer, keras.Model)
            and "backbone" in [inner.name for inner in layer.layers]]


def explainable(model: keras.Model) -> bool:
    """Whether every network of `model` has a convolutional block to read (hub layers do
    not)."""
    nets = networks(model)
    return bool(nets) and all(_last_block(net.get_layer("backbone")) is not None
                              for net in nets)


def _last_block(base) -> object | None:
    """The activations Grad-CAM weighs: the input of the backbone's closing global average
    pooling, followed back past pooling layers; None for a backbone without one."""
    if not isinstance(base, keras.Model) or not isinstance(
            base.layers[-1], keras.layers.GlobalAveragePooling2D):
        return None
    tensor = base.layers[-1].input
    while isinstance(tensor._keras_history.layer, _POOLING):
        tensor = tensor._keras_history.layer.input
    return tensor


class _Branch:
    """One network cut where Grad-CAM reads it: scaled image to (block activations, pooled
    features), and pooled features (with the metadata) to the last layer's input."""

    def __init__(self, net: keras.Model):
        base = net.get_layer("backbone")
        self.scaling = net.get_layer("input_scaling")
        self.block = keras.Model(base.inputs, [_last_block(base), base.outputs[0]])
        self.final = next(layer for layer in net.layers if layer.name in _OUTPUT_LAYERS)
        self.uses_metadata = METADATA_KEY in net.input_names
        pooled = base.inbound_nodes[0].outputs  # the backbone's output in the network
        head_inputs = [pooled] + ([net.get_layer(METADATA_KEY).output]
                                  if self.uses_metadata else [])
        self.head = keras.Model(head_inputs, self.final.input)

    def __call__(self, inputs: dict, tape: tf.GradientTape) -> tuple[tf.Tensor, tf.Tensor]:
        """(block activations [B, h, w, C], last layer's pre-activation [B, 1 or K]), both
        float32."""
        scaled = self.scaling(inputs[IMAGE_INPUT])
        tape.watch(scaled)
        block, pooled = self.block(scaled, training=False)
        head_inputs = [pooled] + ([inputs[METADATA_KEY]] if self.uses_metadata else [])
        features = tf.cast(self.head(head_inputs, training=False), tf.float32)
        logits = tf.matmul(features, tf.cast(self.final.kernel, tf.float32))
        return block, logits + tf.cast(self.final.bias, tf.float32)


def log_score(logits: list[tf.Tensor], task: TaskSpec) -> tf.Tensor:
    """log of the served score [B] from each member's pre-activation: the log of the mean of
    the members' probabilities, then the positive class, the urgent classes' sum or the top
    class."""
    if task.binary:
        per_member = [tf.math.log_sigmoid(z[:, 0]) for z in logits]
        return tf.reduce_logsumexp(tf.stack(per_member), axis=0) - math.log(len(logits))
    log_probabilities = (tf.reduce_logsumexp(tf.stack([tf.nn.log_softmax(z) for z in logits]),
                                             axis=0) - math.log(len(logits)))
    if task.urgent_ids:
        return tf.reduce_logsumexp(tf.gather(log_probabilities, task.urgent_ids, axis=1),
                                   axis=1)
    top = tf.stop_gradient(tf.argmax(log_probabilities, axis=1))
    return tf.gather(log_probabilities, top, axis=1, batch_dims=1)


def class_activation_maps(model: keras.Model, inputs: dict, task: TaskSpec
                          ) -> tuple[tf.Tensor, tf.Tensor]:
    """(maps [B, h, w] in [0, 1] on the last block's grid, served score [B]) for the
    transformed `inputs`; each map is scaled by its own maximum (all zero where no part of
    the image raises the score)."""
    branches = [_Branch(net) for net in networks(model)]
    with tf.GradientTape() as tape:
        blocks, logits = zip(*(branch(inputs, tape) for branch in branches))
        target = log_score(list(logits), task)
    gradients = tape.gradient(target, list(blocks))
    cam = tf.add_n([
        tf.einsum("bhwc,bc->bhw", tf.cast(block, tf.float32),
                  tf.reduce_mean(tf.cast(gradient, tf.float32), axis=[1, 2]))
        for block, gradient in zip(blocks, gradients)])
    cam = tf.nn.relu(cam)
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(cam, peak), tf.exp(target)


def to_image_size(cam: tf.Tensor, height: tf.Tensor, width: tf.Tensor, size: int,
                  resize: str) -> tf.Tensor:
    """One map [h, w] on the block's grid to [height, width] over the decoded image,
    undoing the Transform's `resize` policy (modules/preprocessing.py): stretched back; the
    padding cut off; a centre crop put back in place, with no heat outside it."""
    square = tf.image.resize(cam[..., None], [size, size])
    height32, width32 = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    if resize == "pad":
        # where tf.image.resize_with_pad put the image: its size and offset, floored
        ratio = tf.maximum(tf.cast(width, tf.float32) / size, tf.cast(height, tf.float32) / size)
        inner = tf.stack([tf.cast(height, tf.float32), tf.cast(width, tf.float32)]) / ratio
        start = tf.cast(tf.floor((size - inner) / 2), tf.int32)
        end = start + tf.cast(tf.floor(inner), tf.int32)
        square = square[start[0]:end[0], start[1]:end[1]]
    if resize == "crop":
        side = tf.minimum(height32, width32)
        placed = tf.image.resize(square, tf.stack([side, side]))
        image = tf.image.pad_to_bounding_box(placed, (height32 - side) // 2,
                                             (width32 - side) // 2, height32, width32)
    else:
        image = tf.image.resize(square, tf.stack([height32, width32]))
    return tf.clip_by_value(image[..., 0], 0.0, 1.0)


def explain(model: keras.Model, transformed: dict, encoded: tf.Tensor, task: TaskSpec
            ) -> dict[str, tf.Tensor]:
    """The explain signature's answer for a request of encoded images [B] and their
    transformed features: each image's map at its own size (padded with zeros to the
    request's largest), its height and width, and the score the map explains."""
    inputs = {name: transformed[name] for name in model.input_names}
    cams, score = class_activation_maps(model, inputs, task)
    sizes = tf.map_fn(declared_size, encoded, fn_output_signature=tf.TensorSpec([2], tf.int64))
    largest = tf.cast(tf.reduce_max(sizes, axis=0), tf.int32)
    size = int(inputs[IMAGE_INPUT].shape[1])

    def one(args):
        cam, shape = args
        image = to_image_size(cam, shape[0], shape[1], size, task.resize)
        return tf.image.pad_to_bounding_box(image[..., None], 0, 0, largest[0],
                                            largest[1])[..., 0]

    maps = tf.map_fn(one, (cams, sizes), fn_output_signature=tf.TensorSpec([None, None],
                                                                           tf.float32))
    return {HEATMAP_KEY: maps, HEIGHT_KEY: sizes[:, 0], WIDTH_KEY: sizes[:, 1],
            SCORE_KEY: score}
