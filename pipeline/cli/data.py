"""`medtfx data`: dataset tools (`synth`, a synthetic melanoma dataset in the public
SIIM-ISIC layout, or a small one in the published layout of another public dataset)."""

from __future__ import annotations

import argparse

from pipeline.cli import common, data_import
from pipeline.core.console import Console

# SynthSpec fields that only --task melanoma reads; their options default to None, so that
# an option given for another task can be refused.
MELANOMA_ONLY = ("test_images", "malignant_share", "label_noise", "signal", "site_signal",
                 "grayscale_share", "release")


def add_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="dataset tools", description="Dataset tools.")
    data_commands = data.add_subparsers(metavar="COMMAND", required=True)
    synth = data_commands.add_parser(
        "synth", help="write a synthetic dataset in a public layout",
        description="--task melanoma (the default) writes trainNN-COUNT.tfrec and "
        "testNN-COUNT.tfrec shards with the keys and types of the public melanoma TFRecords, "
        "triple-stratified, with a learnable lesion signal. The other tasks write a small "
        "dataset in the published download layout of the Kermany pneumonia X-rays, the SPR "
        "chest X-ray age/sex set, CelebA, or the DDSM notebook's CSVs and PNGs, quirks "
        "included, each image with a label signal a small CNN learns. Deterministic for a "
        "seed.")
    _synth_arguments(synth)
    common.add_verbose(synth)
    synth.set_defaults(command=synth_command)
    data_import.add_parser(data_commands)


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.sample.synth import SynthSpec
    from pipeline.sample.layouts import DEFAULT_SIZE, TASKS, LayoutSpec

    d = SynthSpec()
    parser.add_argument("--task", choices=("melanoma", *TASKS), default="melanoma",
                        help="the dataset whose layout to write (melanoma)")
    parser.add_argument("--out", required=True,
                        help="directory to write (melanoma: must not hold shards; other "
                        "tasks: must be empty or absent)")
    parser.add_argument("--images", type=int,
                        help=f"melanoma: train images ({d.images}); other tasks: images in "
                        f"all splits ({LayoutSpec.images})")
    parser.add_argument("--size", type=int,
                        help=f"image side in px (melanoma {d.size}; "
                        + ", ".join(f"{t} {s}" for t, s in DEFAULT_SIZE.items())
                        + "); pneumonia images are 1.1-1.6 times as wide, celeba ones "
                        "218/178 times as high")
    parser.add_argument("--seed", type=int, help=f"random seed ({d.seed})")
    melanoma = parser.add_argument_group("melanoma only",
                                         "these options apply to --task melanoma only")
    melanoma.add_argument("--test-images", type=int, help="unlabelled test images (images/4)")
    melanoma.add_argument("--malignant-share", type=float,
                          help=f"share of malignant labels ({d.malignant_share}; the 2020 "
                          "challenge had 0.018)")
    melanoma.add_argument("--label-noise", type=float,
                          help=f"share of labels drawn at random ({d.label_noise})")
    melanoma.add_argument("--signal", type=float,
                          help=f"separation of each lesion attribute in SDs ({d.signal})")
    melanoma.add_argument("--site-signal", action="append", metavar="SITE=STRENGTH",
                          help="scale the signal on one anatomic site, e.g. "
                          "'lower extremity=0' removes it (default: lower extremity=0.7)")
    melanoma.add_argument("--grayscale-share", type=float,
                          help=f"share of images stored as grayscale JPEG ({d.grayscale_share})")
    melanoma.add_argument("--release", choices=("2020", "70k"),
                          help=f"2020: with diagnosis; 70k: with source, without diagnosis "
                          f"({d.release})")


def synth_command(args: argparse.Namespace) -> int:
    if args.task != "melanoma":
        return _layout_command(args)
    from pipeline.sample.synth import SynthSpec

    try:
        given = _given(args, ("images", "size", "seed", *MELANOMA_ONLY))
        if "site_signal" in given:
            given["site_signal"] = tuple(_site_strength(s) for s in given["site_signal"])
        spec = SynthSpec(**given)
    except ValueError as err:
        print(f"error: {err}")
        return common.EXIT_USAGE

    def body(console: Console) -> int:
        from pipeline.sample.synth import generate

        manifest = generate(args.out, spec)
        train, test = manifest["train"], manifest["test"]
        console.say(
            f"wrote {len(train)} train shards ({sum(s['images'] for s in train)} images) and "
            f"{len(test)} test shards ({sum(s['images'] for s in test)} images) to {args.out}")
        best = manifest["best_auc"]
        console.say(f"best attainable AUC: {best['image']:.3f} from the image, "
                    f"{best['image_and_metadata']:.3f} with age and site")
        return 0

    return common.guarded(common.temp_log("synth"), args.verbose, body)


def _layout_command(args: argparse.Namespace) -> int:
    from pipeline.sample.layouts import LayoutSpec

    melanoma_only = sorted(_given(args, MELANOMA_ONLY))
    try:
        if melanoma_only:
            option = "--" + melanoma_only[0].replace("_", "-")
            raise ValueError(f"{option} applies to --task melanoma only")
        spec = LayoutSpec(task=args.task, **_given(args, ("images", "size", "seed")))
    except ValueError as err:
        print(f"error: {err}")
        return common.EXIT_USAGE

    def body(console: Console) -> int:
        from pipeline.sample.layouts import generate_layout

        console.say(_layout_summary(generate_layout(args.out, spec)))
        return 0

    return common.guarded(common.temp_log("synth"), args.verbose, body)


def _layout_summary(manifest: dict) -> str:
    """One line: files, images per split and class, quirks."""
    splits = "; ".join(f"{split} " + ", ".join(f"{n} {name}" for name, n in classes.items())
                       for split, classes in manifest["counts"].items())
    quirks = ", ".join(f"{name} {n}" for name, n in manifest["quirks"].items())
    return (f"wrote {manifest['files']} files in the {manifest['task']} layout to "
            f"{manifest['out']}: {splits}; quirks: {quirks}")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _site_strength(text: str) -> tuple[str, float]:
    site, sep, strength = text.rpartition("=")
    if not sep:
        raise ValueError(f"--site-signal {text!r}: expected SITE=STRENGTH")
    try:
        return site, float(strength)
    except ValueError:
        raise ValueError(f"--site-signal {text!r}: strength must be a number") from None
