"""`medtfx data`: dataset tools (`synth`, a synthetic melanoma dataset in the public
SIIM-ISIC layout)."""

from __future__ import annotations

import argparse

from pipeline.cli import common, data_import
from pipeline.ops.console import Console


def add_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="dataset tools", description="Dataset tools.")
    data_commands = data.add_subparsers(metavar="COMMAND", required=True)
    synth = data_commands.add_parser(
        "synth", help="write a synthetic melanoma dataset in the public SIIM-ISIC layout",
        description="Writes trainNN-COUNT.tfrec and testNN-COUNT.tfrec shards with the keys "
        "and types of the public melanoma TFRecords, triple-stratified, with a learnable "
        "lesion signal. Deterministic for a seed.")
    _synth_arguments(synth)
    common.add_verbose(synth)
    synth.set_defaults(command=synth_command)
    data_import.add_parser(data_commands)


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.data.synth import SynthSpec

    d = SynthSpec()
    parser.add_argument("--out", required=True, help="directory to write (must not hold shards)")
    parser.add_argument("--images", type=int, default=d.images, help=f"train images ({d.images})")
    parser.add_argument("--size", type=int, default=d.size, help=f"image side in px ({d.size})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed ({d.seed})")
    parser.add_argument("--test-images", type=int, help="unlabelled test images (images/4)")
    parser.add_argument("--malignant-share", type=float, default=d.malignant_share,
                        help=f"share of malignant labels ({d.malignant_share}; the 2020 "
                        "challenge had 0.018)")
    parser.add_argument("--label-noise", type=float, default=d.label_noise,
                        help=f"share of labels drawn at random ({d.label_noise})")
    parser.add_argument("--signal", type=float, default=d.signal,
                        help=f"separation of each lesion attribute in SDs ({d.signal})")
    parser.add_argument("--site-signal", action="append", metavar="SITE=STRENGTH",
                        help="scale the signal on one anatomic site, e.g. "
                        "'lower extremity=0' removes it (default: lower extremity=0.7)")
    parser.add_argument("--grayscale-share", type=float, default=d.grayscale_share,
                        help="share of images stored as grayscale JPEG (0)")
    parser.add_argument("--release", choices=("2020", "70k"), default=d.release,
                        help="2020: with diagnosis; 70k: with source, without diagnosis")


def synth_command(args: argparse.Namespace) -> int:
    from pipeline.data.synth import SynthSpec

    try:
        site_signal = SynthSpec.site_signal
        if args.site_signal:
            site_signal = tuple(_site_strength(s) for s in args.site_signal)
        spec = SynthSpec(
            images=args.images, size=args.size, seed=args.seed,
            test_images=args.test_images, malignant_share=args.malignant_share,
            label_noise=args.label_noise, signal=args.signal, site_signal=site_signal,
            grayscale_share=args.grayscale_share, release=args.release)
    except ValueError as err:
        print(f"error: {err}")
        return common.EXIT_USAGE

    def body(console: Console) -> int:
        from pipeline.data.synth import generate

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


def _site_strength(text: str) -> tuple[str, float]:
    site, sep, strength = text.rpartition("=")
    if not sep:
        raise ValueError(f"--site-signal {text!r}: expected SITE=STRENGTH")
    try:
        return site, float(strength)
    except ValueError:
        raise ValueError(f"--site-signal {text!r}: strength must be a number") from None
