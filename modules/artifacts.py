"""Names of the files medtfx writes inside TFX artifacts and exported models.

Free of heavy imports, so that code reading a run's results need not load TensorFlow.
"""

VALIDATION_FILE = "medtfx-validation.json"  # in a Model: validation labels, scores, epochs
THRESHOLD_ASSET = "operating_threshold.txt"  # in a SavedModel's assets: the decision threshold
PACKAGE_FILE = "medtfx-package.json"  # in a packaged model: what was packaged
CARD_DIR = "assets.extra"  # copied with the model; TF Serving reads only warm-up files there
SUBMISSION_FILE = "submission.csv"  # in a Submission: image name and scores of each test image
# ... beside it, for a model with an out-of-distribution guard: each test image's ood_score
# and in_distribution (Kaggle scores submission.csv, which keeps exactly its columns)
IN_DISTRIBUTION_FILE = "in_distribution.csv"
OOD_FLAGGED = "ood_flagged"  # a Submission's property: how many of its images were flagged
# The artifact type's name, which KFP makes its schema title (`package.Class`, one module):
# TFX's container entrypoint imports a custom type's class by that title.
SUBMISSION_TYPE = "components.Submission"
