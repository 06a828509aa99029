"""Feature keys and categorical codes of the SIIM-ISIC melanoma TFRecords.

Every key is a scalar FixedLenFeature in the public files. Categoricals are int64 codes made
with pandas.factorize per release, so -1 marks a missing value and the code tables below are
those of the synthetic release (`medtfx data synth`); real releases carry their own order.
"""

from __future__ import annotations

IMAGE_KEY = "image"
IMAGE_NAME_KEY = "image_name"
PATIENT_KEY = "patient_id"
SEX_KEY = "sex"
AGE_KEY = "age_approx"
SITE_KEY = "anatom_site_general_challenge"
DIAGNOSIS_KEY = "diagnosis"
SOURCE_KEY = "source"
LABEL_KEY = "target"

MISSING = -1

# Derived in the model's `slicing_features` signature, for slicing in the Evaluator.
AGE_BUCKET_KEY = "age_bucket"
# Transformed: sex, age and site as one float vector for the model's metadata branch.
METADATA_KEY = "metadata"
METADATA_RAW_KEYS = (SEX_KEY, AGE_KEY, SITE_KEY)

SEXES = ("male", "female")
SITES = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles",
         "oral/genital")
DIAGNOSES = ("unknown", "nevus", "melanoma", "seborrheic keratosis", "lentigo NOS",
             "lichenoid keratosis", "solar lentigo", "cafe-au-lait macule",
             "atypical melanocytic proliferation")
SOURCES = ("ISIC20", "ISIC19", "ISIC18")

CODE_TABLES = {SEX_KEY: SEXES, SITE_KEY: SITES, DIAGNOSIS_KEY: DIAGNOSES, SOURCE_KEY: SOURCES}
# sex one-hot + missing, age / 100 + missing flag, site one-hot + missing
METADATA_DIM = (len(SEXES) + 1) + 2 + (len(SITES) + 1)


def code_of(key: str, name: str) -> int:
    """The int64 code of a category name, e.g. code_of(SITE_KEY, "torso") == 0."""
    table = CODE_TABLES[key]
    if name not in table:
        raise ValueError(f"{key} has no category {name!r}; known: {', '.join(table)}")
    return table.index(name)


def age_bucket_names(boundaries: list[int]) -> list[str]:
    """Names of the buckets `age_bucket` returns: index i names bucket i."""
    edges = [None, *boundaries, None]
    return [f"<{hi}" if lo is None else f"{lo}+" if hi is None else f"{lo}-{hi - 1}"
            for lo, hi in zip(edges[:-1], edges[1:])]


def age_bucket(age, boundaries: list[int]):
    """Bucket index of each age (an int64 tensor) for `boundaries`; -1 where age is missing."""
    import tensorflow as tf

    edges = tf.constant(sorted(boundaries), dtype=tf.int64)
    bucket = tf.searchsorted(edges, tf.cast(age, tf.int64), side="right", out_type=tf.int64)
    return tf.where(age < 0, tf.constant(MISSING, tf.int64), bucket)
