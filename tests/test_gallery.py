"""The report's gallery (pipeline/results/gallery.py): which cases it shows. The page itself,
with its embedded heat maps, is checked in Chromium by tests/test_pipeline_e2e.py."""

from __future__ import annotations

from pipeline.config import load_config
from pipeline.results.gallery import Example, caption, slice_names, worst

CONFIG = load_config()
TASK = CONFIG.task


def codes(**named: str | int) -> dict[str, int]:
    """Metadata codes from names: sex="female", site="torso", age=50."""
    sites = TASK.metadata["anatom_site_general_challenge"].values
    sexes = TASK.metadata["sex"].values
    return {"sex": sexes.index(named["sex"]),
            "anatom_site_general_challenge": sites.index(named["site"]),
            "age_approx": named["age"], "diagnosis": TASK.missing, "source": TASK.missing}


def test_an_example_falls_in_the_slices_the_evaluator_names():
    """The names are the report's (a cross's features in TFMA's order, by name)."""
    assert slice_names(codes(sex="female", site="torso", age=50), CONFIG.evaluation.slices,
                       TASK) == {"sex = female", "age = 45-59", "anatomic site = torso",
                                 "anatomic site = torso & sex = female"}
    missing = {**codes(sex="male", site="torso", age=50), "age_approx": TASK.missing}
    assert "age = missing" in slice_names(missing, [["age_bucket"]], TASK)


def test_the_worst_misses_are_the_lowest_positives_and_highest_negatives():
    cases = [Example(b"", f"ISIC_{i}", label, score, {}) for i, (label, score) in
             enumerate([(1, 0.1), (1, 0.3), (1, 0.9), (0, 0.8), (0, 0.6), (0, 0.2)])]
    chosen = worst(cases, threshold=0.5, cases=1)
    assert [[c.name for c in kind] for kind in chosen.values()] == [["ISIC_0"], ["ISIC_3"]]
    assert [len(kind) for kind in worst(cases, 0.5, 4).values()] == [2, 2]


def test_a_caption_names_the_case_its_score_and_what_was_recorded():
    example = Example(b"", "ISIC_0000012", 1, 0.0312, codes(sex="female", site="torso",
                                                            age=50))
    assert caption(example, TASK) == ("ISIC_0000012; score 0.031; sex female; "
                                      "anatomic site torso; age 50")
