"""A synthetic melanoma dataset in the layout of the public SIIM-ISIC TFRecords.

Each lesion has four latent attributes (border irregularity, colour variegation, asymmetry,
diameter), each drawn N(c * s * signal, 1) for clean label c, where s is the strength of the
signal on the lesion's anatomic site. The renderer maps every attribute monotonically onto
the picture, so the sum of the four is what an ideal reader of the image can know: it is
distributed N(c * 2 * s * signal, 1) after scaling, and the best AUC from the image within a
site is Phi(2 * s * signal / sqrt(2)). Malignancy is likelier with age (the metadata signal).
Each stored label is, with probability `label_noise`, replaced by an independent draw at the
malignant share; that keeps the ideal ranking and shrinks every AUC towards 0.5 by the factor
(1 - label_noise). `best_auc` turns this into numbers; docs/data.md quotes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import tempfile
from typing import Iterator

import numpy as np

from modules import features as F
from modules.errors import MedtfxError
from pipeline.data.shards import shard_filename
from pipeline.data.synth_population import (
    AGES,
    age_intercept,
    age_probs,
    best_auc,
    malignant_prob,
    site_probs,
)
from pipeline.data.synth_render import lesion_mask, render_lesion

MANIFEST = "synth-manifest.json"
RENDER_SECONDS_PER_PIXEL = 4e-7  # measured: 1.5 ms for a 64 px lesion on one core


@dataclasses.dataclass(frozen=True)
class SynthSpec:
    images: int = 4000
    size: int = 64
    seed: int = 0
    test_images: int | None = None  # default: a quarter of `images`
    train_shards: int = 15
    test_shards: int = 4
    malignant_share: float = 0.1
    label_noise: float = 0.05
    signal: float = 1.5
    site_signal: tuple[tuple[str, float], ...] = (("lower extremity", 0.7),)
    grayscale_share: float = 0.0
    release: str = "2020"  # "2020": carries diagnosis; "70k": carries source, no diagnosis
    first_patient: int = 0  # patient ids count from here (a later delivery: new patients)

    def __post_init__(self) -> None:
        if self.images < 2 * self.train_shards:
            raise ValueError(f"--images must be at least {2 * self.train_shards} "
                             f"(two per train shard), got {self.images}")
        if self.size < 16:
            raise ValueError(f"--size must be at least 16 px, got {self.size}")
        if not 0 < self.malignant_share < 1 or not 0 <= self.label_noise < 1:
            raise ValueError("malignant share must be in (0, 1) and label noise in [0, 1)")
        if self.release not in ("2020", "70k"):
            raise ValueError(f"release must be 2020 or 70k, got {self.release!r}")
        for site, strength in self.site_signal:
            F.code_of(F.SITE_KEY, site)
            if strength < 0:
                raise ValueError(f"site signal for {site} must be >= 0, got {strength}")

    @property
    def n_test(self) -> int:
        return self.images // 4 if self.test_images is None else self.test_images

    def site_strength(self, site_code: int) -> float:
        strengths = {F.code_of(F.SITE_KEY, name): s for name, s in self.site_signal}
        return strengths.get(site_code, 1.0)


@dataclasses.dataclass
class Lesion:
    name: str
    patient: int
    sex: int
    age: int
    site: int
    clean: int
    target: int
    diagnosis: int
    source: int
    attributes: tuple[float, float, float, float]
    seed: int
    grayscale: bool


def _draw_patients(spec: SynthSpec, n_images: int, rng: np.random.Generator,
                   first_patient: int, first_image: int) -> list[list[Lesion]]:
    mean_images = float(np.clip(n_images / 2000, 1.5, 16))
    intercept = age_intercept(spec.malignant_share)
    site_codes = list(range(len(F.SITES))) + [F.MISSING]
    patients: list[list[Lesion]] = []
    made = 0
    while made < n_images:
        count = min(int(rng.geometric(1 / mean_images)), n_images - made)
        sex = F.MISSING if rng.random() < 0.002 else int(rng.integers(2))
        age = F.MISSING if rng.random() < 0.002 else int(rng.choice(AGES, p=age_probs()))
        pid = first_patient + len(patients)
        lesions = []
        for _ in range(count):
            site = int(rng.choice(site_codes, p=site_probs()))
            clean = int(rng.random() < malignant_prob(age, intercept))
            noisy = (int(rng.random() < spec.malignant_share) if rng.random() < spec.label_noise
                     else clean)
            shift = clean * spec.signal * spec.site_strength(site)
            attributes = tuple(float(a) for a in rng.normal(shift, 1.0, 4))
            index = first_image + made
            lesions.append(Lesion(
                name=f"ISIC_{index:07d}", patient=pid, sex=sex, age=age, site=site,
                clean=clean, target=noisy, diagnosis=_diagnosis(noisy, rng),
                source=int(rng.choice(3, p=(0.5, 0.3, 0.2))), attributes=attributes,
                seed=int(rng.integers(2**31)), grayscale=bool(rng.random() < spec.grayscale_share)))
            made += 1
        patients.append(lesions)
    return patients


def labelled_lesions(spec: SynthSpec) -> dict[str, Lesion]:
    """The labelled images' lesions by image name, drawn again from the spec's seed (the
    labelled images are drawn first, so nothing else need be replayed)."""
    rng = np.random.default_rng(spec.seed)
    patients = _draw_patients(spec, spec.images, rng, spec.first_patient, 0)
    return {lesion.name: lesion for patient in patients for lesion in patient}


def lesion_masks(data_root: str) -> dict[str, np.ndarray]:
    """Where each labelled image of the sample in `data_root` shows its lesion ([size,
    size] in [0, 1], by image name), from the manifest `generate` wrote beside it."""
    with open(os.path.join(data_root, MANIFEST)) as f:
        fields = json.load(f)["spec"]
    spec = SynthSpec(**{**fields, "site_signal": tuple(map(tuple, fields["site_signal"]))})
    return {name: lesion_mask(lesion.attributes, lesion.seed, spec.size)
            for name, lesion in labelled_lesions(spec).items()}


def _diagnosis(target: int, rng: np.random.Generator) -> int:
    if target:
        return F.code_of(F.DIAGNOSIS_KEY, "melanoma")
    benign = [c for c, name in enumerate(F.DIAGNOSES) if name != "melanoma"]
    weights = np.array([80, 15, 1.5, 1, 1, 0.5, 0.5, 0.5])
    return int(rng.choice(benign, p=weights / weights.sum()))


def stratify(patients: list[list[Lesion]], n_shards: int,
             rng: np.random.Generator) -> list[list[list[Lesion]]]:
    """Triple stratification: whole patients per shard, balanced malignant counts, and the
    same number of patients with 1, 2, ... N images in every shard (to within one)."""
    shards: list[list[list[Lesion]]] = [[] for _ in range(n_shards)]
    malignant = np.zeros(n_shards)
    images = np.zeros(n_shards)
    by_count: dict[int, list[list[Lesion]]] = {}
    for patient in patients:
        by_count.setdefault(len(patient), []).append(patient)
    for count in sorted(by_count, reverse=True):
        group = by_count[count]
        rng.shuffle(group)
        group.sort(key=lambda p: -sum(lesion.target for lesion in p))
        for start in range(0, len(group), n_shards):
            block = group[start:start + n_shards]
            # The heaviest patient of the block goes to the shard with the fewest malignant
            # images so far; each shard takes at most one patient per block.
            order = sorted(range(n_shards), key=lambda s: (malignant[s], images[s], rng.random()))
            for patient, shard in zip(block, order):
                shards[shard].append(patient)
                malignant[shard] += sum(lesion.target for lesion in patient)
                images[shard] += len(patient)
    return shards


def _deal(patients: list[list[Lesion]], n_shards: int) -> list[list[list[Lesion]]]:
    shards: list[list[list[Lesion]]] = [[] for _ in range(n_shards)]
    for i, patient in enumerate(patients):
        shards[i % n_shards].append(patient)
    return shards


def _example(lesion: Lesion, spec: SynthSpec, labelled: bool) -> bytes:
    import tensorflow as tf

    def ints(v: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    def raw(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    feats = {
        F.IMAGE_KEY: raw(render_lesion(lesion.attributes, lesion.seed, spec.size,
                                       lesion.grayscale)),
        F.IMAGE_NAME_KEY: raw(lesion.name.encode()),
        F.PATIENT_KEY: ints(lesion.patient),
        F.SEX_KEY: ints(lesion.sex),
        F.AGE_KEY: ints(lesion.age),
        F.SITE_KEY: ints(lesion.site),
    }
    if spec.release == "70k":
        feats[F.SOURCE_KEY] = ints(lesion.source)
    if labelled:
        feats[F.LABEL_KEY] = ints(lesion.target)
        if spec.release == "2020":
            feats[F.DIAGNOSIS_KEY] = ints(lesion.diagnosis)
    # Deterministic: protobuf writes map entries in an order that changes between processes.
    example = tf.train.Example(features=tf.train.Features(feature=feats))
    return example.SerializeToString(deterministic=True)


def _write_shard(job: tuple[str, list[Lesion], SynthSpec, bool]) -> None:
    import tensorflow as tf

    path, lesions, spec, labelled = job
    with tf.io.TFRecordWriter(path) as writer:
        for lesion in lesions:
            writer.write(_example(lesion, spec, labelled))


def _flatten(shard: list[list[Lesion]]) -> list[Lesion]:
    return [lesion for patient in shard for lesion in patient]


def generate(out_dir: str, spec: SynthSpec, workers: int | None = None) -> dict:
    """Writes the dataset to `out_dir` (which must not already hold shards) and returns
    its manifest. Files appear only when all are written."""
    if os.path.isdir(out_dir) and any(n.endswith(".tfrec") for n in os.listdir(out_dir)):
        raise MedtfxError(f"{out_dir}: already holds .tfrec shards; not overwriting them")
    rng = np.random.default_rng(spec.seed)
    train = stratify(_draw_patients(spec, spec.images, rng, spec.first_patient, 0),
                     spec.train_shards, rng)
    n_train_patients = sum(len(s) for s in train)
    test_patients = _draw_patients(spec, spec.n_test, rng,
                                   spec.first_patient + n_train_patients, spec.images)
    test = _deal(test_patients, min(spec.test_shards, len(test_patients)))

    with staging_in(out_dir) as staging:
        jobs = []
        for kind, shards, labelled in (("train", train, True), ("test", test, False)):
            for index, shard in enumerate(shards):
                lesions = _flatten(shard)
                name = shard_filename(kind, index, len(lesions))
                jobs.append((os.path.join(staging, name), lesions, spec, labelled))
        _run_jobs(jobs, workers)
        manifest = _manifest(spec, train, test)
        with open(os.path.join(staging, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2)
    return manifest


@contextlib.contextmanager
def staging_in(out_dir: str) -> Iterator[str]:
    """A hidden directory inside `out_dir` to fill; what it holds moves into `out_dir` when
    the block ends without error, so a reader never sees half a dataset."""
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".synth-", dir=out_dir)
    try:
        yield staging
        for name in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_jobs(jobs: list, workers: int | None) -> None:
    if workers is None:
        # A spawned worker pays ~5 s to import TensorFlow: only worth it for big datasets.
        pixels = sum(len(job[1]) for job in jobs) * jobs[0][2].size ** 2
        workers = os.cpu_count() or 1 if pixels * RENDER_SECONDS_PER_PIXEL > 30 else 1
    if workers == 1:
        for job in jobs:
            _write_shard(job)
        return
    # Largest shards first keeps every worker busy to the end.
    jobs = sorted(jobs, key=lambda job: -len(job[1]))
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for _ in pool.imap_unordered(_write_shard, jobs):
            pass


def _manifest(spec: SynthSpec, train: list, test: list) -> dict:
    def describe(kind: str, shards: list) -> list[dict]:
        return [{"file": shard_filename(kind, i, len(_flatten(s))), "patients": len(s),
                 "images": len(_flatten(s)),
                 "malignant": sum(lesion.target for lesion in _flatten(s))}
                for i, s in enumerate(shards)]

    return {
        "generator": "medtfx data synth",
        "spec": dataclasses.asdict(spec),
        "codes": {key: dict(enumerate(table)) for key, table in F.CODE_TABLES.items()},
        "best_auc": best_auc(spec),
        "train": describe("train", train),
        "test": describe("test", test),
    }
