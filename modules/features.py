"""Feature keys and categorical codes of the SIIM-ISIC melanoma TFRecords: the default task
(modules/task.py) and the synthetic release (`medtfx data synth`).

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

SEXES = ("male", "female")
SITES = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles",
         "oral/genital")
DIAGNOSES = ("unknown", "nevus", "melanoma", "seborrheic keratosis", "lentigo NOS",
             "lichenoid keratosis", "solar lentigo", "cafe-au-lait macule",
             "atypical melanocytic proliferation")
SOURCES = ("ISIC20", "ISIC19", "ISIC18")

CODE_TABLES = {SEX_KEY: SEXES, SITE_KEY: SITES, DIAGNOSIS_KEY: DIAGNOSES, SOURCE_KEY: SOURCES}


def code_of(key: str, name: str) -> int:
    """The int64 code of a category name, e.g. code_of(SITE_KEY, "torso") == 0."""
    table = CODE_TABLES[key]
    if name not in table:
        raise ValueError(f"{key} has no category {name!r}; known: {', '.join(table)}")
    return table.index(name)
