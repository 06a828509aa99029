"""DICOM import: pydicom's own test files through the 8-bit conversion (compressed transfer
syntaxes, colour, windows, files that cannot be used), and a generated hospital export
imported end to end with the example config of docs/data.md: PNG pixels, patients per shard,
sex and age from the header, labels joined on SOPInstanceUID, bad files named."""

from __future__ import annotations

import collections
import csv
import io
import os
import re
import shutil

import numpy as np
import pydicom
import pytest
import yaml
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import (UID, UID_dictionary, CTImageStorage, ExplicitVRLittleEndian,
                         JPEGExtended12Bit)

from pipeline.config import load_config
from pipeline.data import dicom
from pipeline.data.catalog import DataImportError, build_catalog
from pipeline.data.importer import QUARANTINE, group_id, import_dataset
from pipeline.data.sources import DicomSettings
from tests.helpers import REPO, medtfx
from tests.test_importer import records

DATA_DOC = os.path.join("docs", "data.md")  # the DICOM section and its example config

MPEG2 = UID("1.2.840.10008.1.2.4.100")  # video: no pydicom decoder exists for it


def wheel_file(name: str) -> str:
    """A file that ships in pydicom's wheel (get_testdata_file would download others)."""
    path = get_testdata_file(name, download=False)
    assert path, f"{name} is not in the installed pydicom"
    return path


def png_of(name: str, **settings) -> np.ndarray:
    with open(wheel_file(name), "rb") as f:
        encoded = dicom.to_png(f.read(), DicomSettings(**settings))
    assert encoded.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(encoded)))


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The DICOM standard's LINEAR window (PS3.3 C.11.2.1.2.1) onto 0..255."""
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(scaled, 0, 255)


def assert_close(png: np.ndarray, expected: np.ndarray) -> None:
    assert png.shape == expected.shape
    assert np.abs(png.astype(float) - expected).max() <= 1  # rounding only


def modality(name: str) -> np.ndarray:
    ds = pydicom.dcmread(wheel_file(name))
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# -- pydicom's own files ------------------------------------------------------------------

def test_a_ct_is_rescaled_then_windowed_by_its_file_or_the_configured_window():
    # 693_J2KI.dcm: a JPEG 2000 CT slice, intercept -1024, window 40/100 (a brain window).
    hu = modality("693_J2KI.dcm")
    assert_close(png_of("693_J2KI.dcm"), linear_window(hu, 40, 100))
    assert_close(png_of("693_J2KI.dcm", voi_window=(400, 2000)), linear_window(hu, 400, 2000))
    # CT_small.dcm: uncompressed, no window: the slice's own range.
    hu = modality("CT_small.dcm")
    assert_close(png_of("CT_small.dcm"), (hu - hu.min()) * 255 / (hu.max() - hu.min()))
    assert_close(png_of("CT_small.dcm", voi_window="minmax"), png_of("CT_small.dcm"))


def test_a_multi_valued_window_uses_its_first_pair():
    ds = pydicom.dcmread(wheel_file("examples_overlay.dcm"))
    assert list(ds.WindowCenter) == [450, 200] and list(ds.WindowWidth) == [790, 443]
    assert_close(png_of("examples_overlay.dcm"),
                 linear_window(ds.pixel_array.astype(float), 450, 790))


def test_without_a_window_the_files_voi_lut_maps_the_image_by_the_bits_its_entries_use():
    """CR, DX and mammograms often carry a VOI LUT table instead of a window. Here: a falling
    ramp over CT_small's range, its descriptor saying 16 bits for 12-bit entries."""
    ds = pydicom.dcmread(wheel_file("CT_small.dcm"))
    assert "WindowCenter" not in ds
    hu = np.rint(modality("CT_small.dcm")).astype(int)
    first, entries = int(hu.min()), int(hu.max() - hu.min()) + 1
    table = np.rint(np.linspace(4095, 0, entries)).astype(int)
    lut = Dataset()
    lut.add_new("LUTDescriptor", "SS" if first < 0 else "US", [entries, first, 16])
    lut.add_new("LUTData", "US", table.tolist())
    ds.VOILUTSequence = [lut]
    encoded = io.BytesIO()
    ds.save_as(encoded)
    png = Image.open(io.BytesIO(dicom.to_png(encoded.getvalue(), DicomSettings())))
    assert_close(np.asarray(png), table[hu - first] * 255 / 4095)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm"])
def test_lossless_transfer_syntaxes_give_the_uncompressed_files_pixels(name):
    assert np.array_equal(png_of(name), png_of("MR_small.dcm"))


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle_16bit.dcm",
                                  "SC_ybr_full_422_uncompressed.dcm",
                                  "SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_gdcm_KY.dcm"])
def test_colour_of_every_encoding_is_stored_as_rgb(name):
    # The same picture as RLE RGB, JPEG lossless, 16-bit RLE, YBR_FULL_422, JPEG with YBR
    # (lossy) and JPEG 2000: the lossy ones within a few levels.
    reference = png_of("SC_rgb_rle.dcm").astype(float)
    png = png_of(name)
    assert png.shape == (100, 100, 3) and png.dtype == np.uint8
    assert np.abs(png - reference).mean() < 4, name  # YBR left unconverted: about 90


def test_palette_colour_and_a_chosen_first_frame_are_rgb():
    assert png_of("examples_palette.dcm").shape == (350, 800, 3)
    assert png_of("examples_ybr_color.dcm", frames="first").shape == (240, 320, 3)


def test_12_bit_jpeg_extended_decodes_with_the_older_encoders_scan_header_too():
    """JPGExtended.dcm: a 12-bit JPEG Extended CR (libjpeg decodes it); JPEG-lossy.dcm: the
    same image as its encoder wrote it, the scan header's spectral selection ending at 0
    (libjpeg refuses it, GDCM reads it)."""
    fixed, quirky = png_of("JPGExtended.dcm"), png_of("JPEG-lossy.dcm")
    assert quirky.shape == (1024, 256) and quirky.dtype == np.uint8
    ds = pydicom.dcmread(wheel_file("JPGExtended.dcm"))
    assert ds.BitsStored == 12 and ds.file_meta.TransferSyntaxUID == JPEGExtended12Bit
    stored = ds.pixel_array.astype(float)
    assert 0 < stored.max() < 4096 and stored.std() > 10  # an image, not a blank
    assert_close(fixed, (stored - stored.min()) * 255 / (stored.max() - stored.min()))
    assert np.abs(quirky.astype(int) - fixed).max() <= 1  # IDCT rounding only


def test_a_12_bit_jpeg_extended_stream_that_gdcm_cannot_read_either_says_so():
    ds = pydicom.dcmread(wheel_file("JPEG-lossy.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:400]])
    encoded = io.BytesIO()
    ds.save_as(encoded)
    with pytest.raises(dicom.DicomError, match=r"^pixel data in transfer syntax JPEG "
                       r"Extended \(Process 2 and 4\) \(1.2.840.10008.1.2.4.51\) does not "
                       r"decode \(Unable to decode"):
        dicom.to_png(encoded.getvalue(), DicomSettings())


# What the DICOM section of docs/data.md says decodes: every other transfer syntax is refused by name.
DECODED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
           "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50",
           "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
           "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90",
           "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
           "1.2.840.10008.1.2.4.203"}


def test_the_transfer_syntaxes_the_docs_list_are_those_with_an_installed_decoder():
    def decodes(uid: str) -> bool:
        try:
            return get_decoder(UID(uid)).is_available
        except NotImplementedError:
            return False

    syntaxes = [uid for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax"]
    assert {uid for uid in syntaxes if decodes(uid)} == DECODED
    section = re.search(r"### DICOM\n(.*?)\n## ", open(os.path.join(REPO, DATA_DOC)).read(),
                        re.S)[1]
    assert [uid for uid in sorted(DECODED) if f"`{uid}`" not in section] == []


@pytest.mark.parametrize("name, reason", [
    ("MR_truncated.dcm", "pixel data in transfer syntax Explicit VR Little Endian "
                         "(1.2.840.10008.1.2.1) does not decode (The number of bytes"),
    ("rtplan.dcm", "no pixel data (SOP class RT Plan Storage)"),
    ("examples_ybr_color.dcm", "30 frames (a cine, volume or stack); set "
                               "source.dicom.frames to first"),
    ("no_meta.dcm", "not a DICOM file: no 'DICM' mark at byte 128"),
    ("meta_missing_tsyntax.dcm", "no Transfer Syntax UID in the file header"),
])
def test_a_file_that_cannot_be_used_says_why(name, reason):
    with pytest.raises(dicom.DicomError) as err:
        png_of(name)
    assert str(err.value).startswith(reason), str(err.value)
    assert "\n" not in str(err.value)


def test_header_attributes_as_text_with_ages_in_years():
    keywords = dicom.header_keywords(["PatientSex", "PatientAge"], "PatientID")
    assert dicom.header(wheel_file("J2K_pixelrep_mismatch.dcm"), keywords) == {
        "PatientID": "JXD191021006", "PatientSex": "", "PatientAge": "76",
        "SOPInstanceUID": "1.2.392.200036.9123.100.11.15002200303521616157144551003340153"}
    ages = {a: dicom.age_in_years(a) for a in ["045Y", "018M", "010W", "400D", "45", "4 5"]}
    assert ages == {"045Y": "45", "018M": "1", "010W": "0", "400D": "1", "45": "45", "4 5": ""}
    with pytest.raises(dicom.DicomError, match="'PatientSx' not DICOM keyword"):
        dicom.header_keywords(["PatientSx"], None)


# -- a generated export, imported end to end ------------------------------------------------

SEXES, AGES = ["M", "F", "O", ""], ["045Y", "018M", "", "070Y"]
SEX_CODES, AGE_YEARS = [0, 1, -1, -1], [45, 1, -1, 70]  # task: sex [male, female]


def instance(uid: str, patient: str, pixels: np.ndarray | None, index: int = 0,
             photometric: str = "MONOCHROME2", syntax: UID = ExplicitVRLittleEndian,
             window: tuple | None = None) -> Dataset:
    """A CT instance as a scanner writes one: 12-bit stored values, intercept -1024."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, uid, "CT"
    ds.PatientID, ds.PatientSex, ds.PatientAge = patient, SEXES[index % 4], AGES[index % 4]
    if pixels is not None:
        ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=12,
                          generate_instance_uid=False)
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    return ds


def save(ds: Dataset, root: str, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
    ds.save_as(os.path.join(root, path), enforce_file_format=True)


def expected_png(ds: Dataset) -> np.ndarray:
    """What the conversion must store, computed here from the standard's formulas."""
    hu = ds.pixel_array.astype(float) - 1024
    if "WindowCenter" in ds:
        first = [v[0] if ds[k].VM > 1 else v for k, v in
                 (("WindowCenter", ds.WindowCenter), ("WindowWidth", ds.WindowWidth))]
        grey = linear_window(hu, *map(float, first))
    else:
        grey = (hu - hu.min()) * 255 / (hu.max() - hu.min())
    return 255 - grey if ds.PhotometricInterpretation == "MONOCHROME1" else grey


def export(root: str, patients: int = 10) -> dict[str, Dataset]:
    """DIR/dicom/<patient>/STUDY1/SERIES<n>/IM000k[.dcm] (odd patients' files without a
    suffix, as PACS exports write them), labels.csv by SOPInstanceUID in shuffled order, two
    unlabelled instances, and a DICOMDIR and a note that are not data."""
    rng = np.random.default_rng(7)
    written, rows = {}, []
    variants = [("MONOCHROME2", (40, 400)), ("MONOCHROME1", ([40, 300], [400, 1500])),
                ("MONOCHROME2", None), ("MONOCHROME1", None)]
    for p in range(patients):
        for k in range(2 + (p == 0)):
            index = p * 3 + k
            photometric, window = variants[index % 4]
            pixels = rng.integers(0, 4096, (16, 20), dtype=np.uint16)
            uid = f"1.2.826.0.1.3680043.8.498.{100 + index}"
            ds = instance(uid, f"P{p:02d}", pixels, p, photometric, window=window)
            suffix = ".dcm" if p % 2 == 0 else ""
            path = f"dicom/P{p:02d}/STUDY1/SERIES{k % 2 + 1}/IM{k:06d}{suffix}"
            save(ds, root, path)
            written[path] = ds
            rows.append([uid, int(rng.integers(0, 2))])
    for u in range(2):
        ds = instance(f"1.2.826.0.1.3680043.8.498.{900 + u}", f"U{u}",
                      rng.integers(0, 4096, (16, 20), dtype=np.uint16), u)
        save(ds, root, f"unlabelled/U{u}/IM000001.dcm")
        written[f"unlabelled/U{u}/IM000001.dcm"] = ds
    rng.shuffle(rows)
    with open(os.path.join(root, "labels.csv"), "w", newline="") as f:
        csv.writer(f).writerows([["SOPInstanceUID", "finding"], *rows])
    for litter in ("dicom/DICOMDIR", "dicom/P00/notes.txt"):
        with open(os.path.join(root, litter), "w") as f:
            f.write("not an image")
    return written


def readme_config(tmp_path, *overrides: str):
    """The DICOM example of docs/data.md (its file, and the config with `overrides`), with a small
    fold plan and Beam in one process."""
    text = open(os.path.join(REPO, DATA_DOC)).read()
    example = re.search(r"### DICOM\n.*?```yaml\n(.*?)```", text, re.S)[1]
    raw = yaml.safe_load(example)
    raw["evaluation"] = {"slices": [["sex"], ["age_bucket"]]}
    raw["beam"] = {"direct_running_mode": "in_memory", "direct_num_workers": 1}
    raw["data"] = {"train_shards": 5, "folds": 5, "eval_fold": 4, "validation_fold": 3}
    path = tmp_path / "dicom.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path), load_config(str(path), list(overrides))


def run_import(root: str, out: str, config) -> dict:
    return import_dataset(root, out, config.source, config.task, config.split_plan,
                          config.limits, config.beam.pipeline_args())


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dicom")
    root = str(tmp / "data")
    written = export(root)
    config_file, config = readme_config(tmp)
    out = str(tmp / "shards")
    return root, written, config_file, config, out, run_import(root, out, config)


def test_the_export_becomes_png_records_with_the_windowed_inverted_pixels(imported):
    root, written, _, _, out, manifest = imported
    shards = records(out)
    stored = {r["image_name"].decode(): r for rows in shards.values() for r in rows}
    assert sorted(stored) == sorted(written)  # suffixless instances too; no litter
    assert manifest["skipped"] == 2 and manifest["quarantined"] == 0
    with open(os.path.join(root, "labels.csv")) as f:
        labels = {row["SOPInstanceUID"]: int(row["finding"]) for row in csv.DictReader(f)}
    for path, ds in written.items():
        record = stored[path]
        assert record["image"].startswith(b"\x89PNG")
        png = np.asarray(Image.open(io.BytesIO(record["image"])))
        assert png.dtype == np.uint8
        assert_close(png, expected_png(ds))
        assert record.get("target") == labels.get(ds.SOPInstanceUID), path
        # PatientSex M/F/O and PatientAge 045Y/018M through the task's names and years.
        index = int(ds.PatientID[1:])  # P03, U1: the patient's number
        assert (record["sex"], record["age"]) == (SEX_CODES[index % 4], AGE_YEARS[index % 4])
        assert record["patient_id"] == group_id(ds.PatientID)


def test_a_patients_instances_share_one_shard_and_unlabelled_ones_are_test_shards(imported):
    _, _, _, _, out, _ = imported
    shards = collections.defaultdict(set)
    for name, rows in records(out).items():
        for row in rows:
            shards[row["patient_id"]].add(name)
            assert name.startswith("test") == row["image_name"].startswith(b"unlabelled/")
    assert len(shards) == 12 and all(len(names) == 1 for names in shards.values())


def add_bad_files(root: str) -> None:
    """Labelled files the conversion refuses: no pixel data, a video transfer syntax, two
    frames; and a file that is not DICOM at all."""
    report = instance("1.2.826.0.1.3680043.8.498.801", "P00", None)
    save(report, root, "dicom/P00/STUDY1/REPORT/IM000001.dcm")
    video = instance("1.2.826.0.1.3680043.8.498.802", "P00", None, syntax=MPEG2)
    video.Rows, video.Columns, video.SamplesPerPixel, video.BitsAllocated = 16, 16, 1, 8
    video.BitsStored, video.HighBit, video.PixelRepresentation = 8, 7, 0
    video.PhotometricInterpretation = "MONOCHROME2"
    video.PixelData = encapsulate([b"\x00\x00\x01\xb3 an MPEG-2 stream"])
    video["PixelData"].VR = "OB"
    save(video, root, "dicom/P00/STUDY1/VIDEO/IM000001.dcm")
    cine = instance("1.2.826.0.1.3680043.8.498.803", "P00",
                    np.zeros((2, 16, 16), np.uint16))
    save(cine, root, "dicom/P00/STUDY1/CINE/IM000001.dcm")
    labels = [[ds.SOPInstanceUID, 1] for ds in (report, video, cine)]
    with open(os.path.join(root, "labels.csv"), "a", newline="") as f:
        csv.writer(f).writerows(labels)


BAD = {"dicom/P00/STUDY1/REPORT/IM000001.dcm": "no pixel data (SOP class CT Image Storage)",
       "dicom/P00/STUDY1/VIDEO/IM000001.dcm": "transfer syntax MPEG2 Main Profile / Main Level "
       "(1.2.840.10008.1.2.4.100) is not supported: no decoder reads it",
       "dicom/P00/STUDY1/CINE/IM000001.dcm": "2 frames (a cine, volume or stack); set "
       "source.dicom.frames to first to import the first frame"}


def test_unusable_files_stop_the_command_by_name(imported, tmp_path):
    root, _, config_file, _, _, _ = imported
    copy = str(tmp_path / "data")
    shutil.copytree(root, copy)
    add_bad_files(copy)
    result = medtfx("data", "import", "--config", config_file, "--data-root", copy,
                    "--out", str(tmp_path / "out"))
    assert result.returncode == 1, result.stdout + result.stderr
    for path, reason in BAD.items():
        assert f"{path}: {reason}" in result.stdout, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not os.path.exists(tmp_path / "out")


def test_unusable_files_are_quarantined_and_the_rest_imported(imported, tmp_path):
    root, written, _, config, _, _ = imported
    copy = str(tmp_path / "data")
    shutil.copytree(root, copy)
    add_bad_files(copy)
    with open(os.path.join(copy, "dicom/P01/STUDY1/broken.dcm"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 a JPEG saved as .dcm")
    _, quarantine = readme_config(tmp_path, "source.on_bad=quarantine")
    out = str(tmp_path / "out")
    manifest = run_import(copy, out, quarantine)
    with open(os.path.join(out, QUARANTINE)) as f:
        listed = {row["file"]: row["problem"] for row in csv.DictReader(f)}
    assert listed.pop("dicom/P01/STUDY1/broken.dcm").startswith("not a DICOM file: no 'DICM'")
    assert listed == BAD
    assert manifest["images"] == len(written) and manifest["quarantined"] == 4


def test_labels_join_on_the_file_path_and_name_rows_and_uids_without_a_file(tmp_path):
    root = str(tmp_path / "data")
    written = export(root, patients=3)
    labelled = [p for p in written if p.startswith("dicom/")]
    rows = [[p.removeprefix("dicom/"), i % 2] for i, p in enumerate(labelled)]
    with open(os.path.join(root, "files.csv"), "w", newline="") as f:
        csv.writer(f).writerows([["file", "finding"], *rows[1:], ["P09/missing.dcm", 0]])
    _, config = readme_config(tmp_path, "source.labels=[{file: files.csv, id_column: file}]",
                              "source.unlabelled=''")
    catalog = build_catalog(root, config.source, config.task)
    assert sorted(i.path for i in catalog.items) == sorted(labelled[1:])
    assert {i.path: i.label for i in catalog.items} == {f"dicom/{p}": y for p, y in rows[1:]}
    assert sorted(map(str, catalog.problems)) == [
        f"{labelled[0]}: image without a row in files.csv",
        f"files.csv:{len(rows) + 1}: no image dicom/P09/missing.dcm for id 'P09/missing.dcm'"]

    with open(os.path.join(root, "labels.csv"), "a") as f:
        f.write("9.9.9,1\n")
    shutil.copy(os.path.join(root, labelled[0]), os.path.join(root, "dicom/P00/copy.dcm"))
    _, config = readme_config(tmp_path)
    problems = sorted(map(str, build_catalog(root, config.source, config.task).problems))
    uid = written[labelled[0]].SOPInstanceUID
    assert problems == [
        f"dicom/P00/copy.dcm: SOPInstanceUID {uid} is also {labelled[0]}'s (the same image "
        "twice)",
        f"labels.csv:{len(labelled) + 2}: no image below dicom has SOPInstanceUID '9.9.9'"]


def test_a_metadata_name_that_is_not_a_dicom_keyword_is_refused(tmp_path):
    root = str(tmp_path / "data")
    export(root, patients=1)
    _, config = readme_config(tmp_path, "source.dicom.columns={PatientSx: sex}")
    with pytest.raises(DataImportError, match="'PatientSx' not DICOM keyword"):
        build_catalog(root, config.source, config.task)
