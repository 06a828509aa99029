"""The config's evaluation: section, what blesses a model and what is reported beside it;
owned here, below the components and the definition, because the Evaluator's config
(pipeline/eval_config.py), ModelPackager and the results all read it."""

from __future__ import annotations

from pydantic import Field

from modules.settings_base import Settings


# The bounds a model must meet to be blessed, as its model card states them.
GATE_BOUNDS = ("auc_threshold", "max_auc_drop", "slice_auc_threshold", "slice_auc_thresholds",
               "max_slice_auc_drop", "min_slice_positives", "min_slice_negatives",
               "target_sensitivity", "min_specificity", "min_accuracy_over_majority",
               "max_ece", "min_balanced_accuracy_over_majority", "min_class_recall",
               "class_recall_floors", "max_class_recall_drop")


class EvaluationConfig(Settings):
    """What blesses a model (every check must hold) and what is reported beside it."""

    auc_threshold: float = 0.75  # overall AUC lower bound
    max_auc_drop: float = 0.01  # overall AUC against the last blessed model
    slice_auc_threshold: float = 0.65  # AUC lower bound on every gated slice
    # Per slice family, e.g. {"sex": 0.7, "sex*anatom_site_general_challenge": 0.6}.
    slice_auc_thresholds: dict[str, float] = Field(default_factory=dict)
    max_slice_auc_drop: float = 0.05  # any gated slice against the last blessed model
    # A slice is gated only with this many malignant and benign examples; smaller ones
    # are reported but cannot block a model on a handful of cases.
    min_slice_positives: int = 10
    min_slice_negatives: int = 10
    # The decision threshold shipped with the model serves the sick first: among the
    # thresholds reaching target_sensitivity on the evaluation fold, the one with the best
    # specificity (then the best sensitivity); specificity there must reach min_specificity
    # (null: reported, not gated).
    target_sensitivity: float = 0.9
    min_specificity: float | None = None
    # Accuracy at the operating threshold must be at least this much above the majority-class
    # rate, the accuracy of always answering the commoner class (null: reported, not gated).
    # With benign cases the majority, beating it means more true than false positives: at 2%
    # malignant and sensitivity 0.9, a specificity above 0.98.
    min_accuracy_over_majority: float | None = None
    report_specificity: float = 0.8  # sensitivity is also reported at this specificity
    # The expected calibration error of the served (calibrated) probability on the
    # evaluation fold, overall, must not exceed this (null: reported, not gated).
    max_ece: float | None = Field(default=None, gt=0, le=1)
    # Three or more classes: auc_threshold and max_auc_drop bound the macro (one-vs-rest) AUC;
    # balanced accuracy (the mean recall over classes) must beat always answering the
    # majority class, whose balanced accuracy is 1/K, by this margin, since plain accuracy
    # cannot tell a model from that answer (DDSM: 87% normal); every class's recall must
    # reach its floor (class_recall_floors by class name, else min_class_recall) and fall
    # no more than max_class_recall_drop below the last blessed model's.
    min_balanced_accuracy_over_majority: float = 0.05
    min_class_recall: float = 0.1
    class_recall_floors: dict[str, float] = Field(default_factory=dict)
    max_class_recall_drop: float = 0.1
    # Slice families: a list of features each (the task's categoricals, or the bucket key
    # of a bucketed numeric); two features make a cross (sex x site). Every family is gated
    # and must occur in the data: add [source] for the 70k release.
    slices: list[list[str]] = Field(default_factory=lambda: [
        ["sex"], ["age_bucket"], ["anatom_site_general_challenge"],
        ["sex", "anatom_site_general_challenge"]])
    # Examples per model call (TFMA's ModelSpec.inference_batch_size): the Evaluator's
    # memory is the model's and one batch's activations, whatever the number of images.
    max_batch: int = Field(default=64, ge=1)
    # The report's gallery (`medtfx report`, pipeline/ops/gallery.py): this many worst
    # false negatives and false positives at the operating threshold, overall and in the
    # gated slice of lowest AUC, with their heat maps (0: none), found among at most
    # gallery_max_examples of the evaluation fold, which the report scores.
    gallery_cases: int = Field(default=4, ge=0)
    gallery_max_examples: int = Field(default=2000, ge=1)

    def slice_auc_bound(self, family: list[str] | tuple[str, ...]) -> float:
        """The AUC a gated slice of `family` (its features, e.g. ["sex"]) must reach; a
        cross matches in any order (TFMA sorts a slice's features by name)."""
        for name, bound in self.slice_auc_thresholds.items():
            if sorted(name.split("*")) == sorted(family):
                return bound
        return self.slice_auc_threshold
