"""What a generated melanoma release holds: its size, shards, signal and quirks."""

from __future__ import annotations

import dataclasses

from modules import features as F


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
