"""Where training runs: the distribution strategy and precision for the hardware present.

TPU when one is attached (a TPU VM or TPU_NAME from Vertex AI / GKE), several workers from
TF_CONFIG, several GPUs on one machine, else the default strategy. Mixed precision only on
accelerators: on CPU it is slower and changes nothing.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
import tf_keras as keras
from absl import logging


def _tpu_attached() -> bool:
    return bool(os.environ.get("TPU_NAME")) or os.path.exists("/dev/accel0")


def _workers() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def choose_strategy(mixed_precision: bool = True) -> tuple[tf.distribute.Strategy, str]:
    """(strategy, its name); also sets the Keras precision policy for that hardware."""
    policy = "float32"
    if _tpu_attached():
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", "local"))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy, name, policy = tf.distribute.TPUStrategy(resolver), "TPUStrategy", \
            "mixed_bfloat16"
    elif _workers() > 1:
        strategy, name = tf.distribute.MultiWorkerMirroredStrategy(), \
            "MultiWorkerMirroredStrategy"
    elif len(tf.config.list_physical_devices("GPU")) > 1:
        strategy, name = tf.distribute.MirroredStrategy(), "MirroredStrategy"
    else:
        strategy, name = tf.distribute.get_strategy(), "default strategy"
    if tf.config.list_physical_devices("GPU") and name != "TPUStrategy":
        policy = "mixed_float16"
    if not mixed_precision:
        policy = "float32"
    keras.mixed_precision.set_global_policy(policy)
    logging.info("Training with %s on %d replica(s), precision %s", name,
                 strategy.num_replicas_in_sync, policy)
    return strategy, name


def wait_for_workers(strategy: tf.distribute.Strategy) -> None:
    """Returns once every worker has got here: one all-reduce of a number, which a worker
    can finish only when all have contributed (at once with a single worker)."""
    strategy.reduce(tf.distribute.ReduceOp.SUM,
                    strategy.run(lambda: tf.constant(1.0)), axis=None)
