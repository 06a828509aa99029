"""The tables of docs/performance.md, rendered from work/bench.json: `make bench` runs this
after measuring, so no figure there is typed by hand.

    python -m tests.benchmarks.doc_tables [--bench work/bench.json] [--doc docs/performance.md]

Each table sits between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`; the prose
around the markers is written by hand. A `make bench` run fills `stages`, `input` and
`tta`; a `make bench ARGS=--scale` run fills `scale`, so each kind of run leaves the other's
tables as they were. A `--quick` run (smoke sizes) changes nothing."""

from __future__ import annotations

import argparse
import json
import os
import re
import time

MARKER = "<!-- bench:{name}:{end} -->"
# make bench's rows that have a table of their own; the rest go to `stages`.
TTA = re.compile(r"AUC with TTA (\d+)")
INPUT = re.compile(r"^(input pipeline|training |import )")


def number(value: float | None, spec: str = ".3g") -> str:
    """A figure for a table: three significant digits unless `spec` says otherwise,
    thousands separated."""
    if value is None:
        return "-"
    if spec == ".3g":
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return format(float(f"{value:.3g}"), "g")
    return format(value, spec)


def duration(seconds: float) -> str:
    """Seconds as a reader compares them: s, min or h."""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else "under 1 s"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def machine_line(report: dict, date: str) -> str:
    """When, on what and how busy: the line above each table."""
    m = report["machine"]
    line = (f"Measured {date} by `make bench{' ARGS=--scale' if report['mode'] == 'scale' else ''}` "
            f"on {m['usable_cores']} of {m['cores']} cores ({m['cpu_model']}), "
            f"{m['memory_gib']} GiB, Python {m['python']}, TensorFlow {m['tensorflow']}")
    load = report.get("load_average")
    if load:
        line += (f"; load average {load['start'][0]:.2f} when it started and "
                 f"{load['end'][0]:.2f} when it ended")
    return line + f"; the bench took {report['seconds'] / 60:.0f} min."


def row_table(rows: list[dict]) -> str:
    return table(["measure", "measured", "floor or baseline", "ratio", "goal"],
                 [[r["name"], number(r["value"]), number(r["floor"]), number(r["ratio"]),
                   r["goal"]] for r in rows])


def component_table(runs: dict[str, dict]) -> str:
    """Each component's seconds and peak PSS in each pipeline run of the bench."""
    components = dict.fromkeys(c for run in runs.values() for c in run["seconds"])
    rows = [[name, *(f"{number(run['seconds'][name], '.1f')} / "
                     f"{number(run['peak_mib'][name], ',.0f')}"
                     if name in run["seconds"] else "-" for run in runs.values())]
            for name in components]
    rows.append(["pipeline wall (s)", *(number(run["wall"], ".1f") for run in runs.values())])
    return table(["component: s / peak MiB", *runs], rows)


def stages(report: dict, date: str) -> str:
    sizes = report["sizes"]
    rows = [r for r in report["rows"] if not TTA.match(r["name"]) and not INPUT.match(r["name"])]
    return "\n\n".join([
        machine_line(report, date) + f" The 64 px run: the default config on "
        f"{sizes['images']:,} images, {sizes['epochs']} epochs; the 512 px run: "
        f"`siim-isic-512.yaml` with {', '.join(sizes['overrides_512'])}, on "
        f"{sizes['images_512']} training images.", row_table(rows), component_table(report["components"])])


def input_pipeline(report: dict, date: str) -> str:
    rows = [r for r in report["rows"] if INPUT.match(r["name"])]
    return machine_line(report, date) + "\n\n" + row_table(rows)


def tta(report: dict, date: str) -> str:
    """AUC and seconds per image with 1, 2, 4 and 8 orientations; TTA 1 is each row's
    baseline."""
    rows = [r for r in report["rows"] if TTA.match(r["name"])]
    if not rows:
        return machine_line(report, date)
    base_seconds = rows[0]["seconds_per_image"] / rows[0]["cost"]
    lines = [["1", number(rows[0]["floor"], ".4f"), number(base_seconds * 1e3, ".2f"), "1.0"]]
    lines += [[TTA.match(r["name"])[1], number(r["value"], ".4f"),
               number(r["seconds_per_image"] * 1e3, ".2f"), number(r["cost"], ".1f")]
              for r in rows]
    images = rows[0]["name"].split(", ")[-1]
    return (machine_line(report, date) + f" On {images}.\n\n"
            + table(["orientations", "AUC", "ms an image", "cost against TTA 1"], lines))


def scale_size(size: dict) -> str:
    """One release size: each component with a floor or images read, against its floor."""
    rows = []
    for name, c in size["components"].items():
        floor = c["floor"] or {}
        if not c["images"] and not floor:
            continue
        ratio = c["seconds"] / floor["seconds"] if floor.get("seconds") else None
        rows.append([name + (" (FAILED)" if c["failed"] else ""), number(c["images"], ",.0f"),
                     number(c["seconds"], ".1f"), number(c["peak_mib"], ",.0f"),
                     number(floor.get("seconds"), ".1f"), number(ratio, ".2f"),
                     floor.get("note", "")])
    return (f"**{size['label']}**: {size['train_images']:,} train and {size['test_images']:,} "
            f"test images at 512 px; the pipeline took {size['wall']:.0f} s.\n\n"
            + table(["component", "images read", "s", "peak MiB", "floor s", "measured / floor",
                     "note"], rows))


def scale_estimates(extrapolation: dict) -> str:
    releases = extrapolation["releases"]

    def cell(stage: dict) -> str:
        if "seconds" not in stage:
            return "-"
        return f"{duration(stage['seconds'])} / {stage['peak_mib'] / 1024:.1f} GiB"

    stage_names = dict.fromkeys(s for r in releases.values() for s in r["stages"])
    rows = [[name, *(cell(r["stages"].get(name, {})) for r in releases.values())]
            for name in stage_names]
    rows.append(["whole run / largest peak", *(cell(r) for r in releases.values())])
    return ("Estimated for the real releases (`tests/benchmarks/extrapolate.py`):\n\n"
            + table(["stage: time / peak", *releases], rows) + "\n\nAssumptions:\n\n"
            + "\n".join(f"- {a}" for a in extrapolation["assumptions"]))


def scale(report: dict, date: str) -> str:
    s = report["scale"]
    rows = [r for r in report["rows"] if " vs " in r["name"] or "2 workers" in r["name"]]
    b6 = s["b6"]
    b6_line = (f"**EfficientNet-B6 at 512 px, TTA {b6['tta']}**, the Evaluator alone on "
               f"{b6['images']} images: " + (
                   f"peak {number(b6['peak_mib'], ',.0f')} MiB, {number(b6['seconds'], '.0f')} s "
                   f"({number(b6['seconds_per_image'], '.2f')} s an image); its Trainer at "
                   f"batch 2 peaked at {number(b6['trainer_peak_mib'], ',.0f')} MiB."
                   if b6.get("peak_mib") is not None and not b6["failed"]
                   else f"failed ({', '.join(b6['failed'])})."))
    return "\n\n".join([machine_line(report, date), *map(scale_size, s["sizes"]),
                        "Growth between the sizes and a second Beam worker:", row_table(rows),
                        b6_line, scale_estimates(s["extrapolation"])])


SECTIONS = {"full": {"stages": stages, "input": input_pipeline, "tta": tta},
            "scale": {"scale": scale}}


def render(report: dict, date: str) -> dict[str, str]:
    """The tables this bench run measured, by marker name (none for a --quick run)."""
    return {name: render_one(report, date)
            for name, render_one in SECTIONS.get(report["mode"], {}).items()}


def fill(doc: str, tables: dict[str, str]) -> str:
    """`doc` with the text between each table's markers replaced; a missing marker is an
    error, so a table is never dropped silently."""
    for name, text in tables.items():
        begin, end = (MARKER.format(name=name, end=e) for e in ("begin", "end"))
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(doc):
            raise ValueError(f"no {begin} ... {end} in the document")
        doc = pattern.sub(lambda _: f"{begin}\n{text}\n{end}", doc, count=1)
    return doc


def bench_date(report: dict, bench_file: str) -> str:
    """The day the bench ran (bench.json written before the field existed: its mtime)."""
    return report.get("date") or time.strftime("%Y-%m-%d",
                                               time.gmtime(os.path.getmtime(bench_file)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default=os.path.join("work", "bench.json"))
    parser.add_argument("--doc", default=os.path.join("docs", "performance.md"))
    args = parser.parse_args()
    with open(args.bench) as f:
        report = json.load(f)
    tables = render(report, bench_date(report, args.bench))
    if not tables:
        print(f"{args.bench} is a {report['mode']} run: {args.doc} left as it was")
        return
    with open(args.doc) as f:
        doc = f.read()
    with open(args.doc, "w") as f:
        f.write(fill(doc, tables))
    print(f"wrote the {', '.join(tables)} tables of {args.doc} from {args.bench}")


if __name__ == "__main__":
    main()
