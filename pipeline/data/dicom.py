"""DICOM files for `medtfx data import`: the header attributes the catalog joins on and reads
as metadata, and an instance's pixels as the 8-bit PNG that a shard stores.

The pipeline decodes JPEG and PNG, so an instance is converted once, at import, the way a
viewer shows it: the modality rescale (Rescale Slope/Intercept, e.g. to Hounsfield units),
then a window to 8 bits (the file's first Window Center/Width, else its first VOI LUT, a
configured window, or the image's own range), MONOCHROME1 inverted so that dense is bright,
colour (RGB, YBR, palette) as RGB. PNG keeps those 8 bits exactly. A file that cannot be
used raises DicomError saying why in a few words; the caller names the file.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import (apply_color_lut, apply_modality_lut, apply_voi, apply_windowing,
                            get_decoder, pixel_array)
from pydicom.uid import JPEGExtended12Bit

from pipeline.data.sources import DicomSettings

SUFFIXES = (".dcm", ".dicom")
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PER_YEAR = {"Y": 1, "M": 12, "W": 52.1775, "D": 365.25}  # PatientAge units


class DicomError(ValueError):
    """A DICOM file that cannot be imported; the message says why."""


def is_instance(path: str) -> bool:
    """A DICOM file by its suffix (.dcm, .dicom) or, for other names (PACS exports name
    files IM000001 or by UID), by the 'DICM' mark at byte 128; DICOMDIR is an index."""
    name = os.path.basename(path)
    if name.lower().endswith(SUFFIXES):
        return True
    if name.upper() == "DICOMDIR":
        return False
    with open(path, "rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM"


def header_keywords(metadata: list[str], group: str | None) -> list[str]:
    """The attributes to read from each header: the metadata's (a name that is not a DICOM
    keyword is refused: a typo would read as always missing), SOPInstanceUID, and the group
    column when it is a DICOM keyword (it may be a CSV table's)."""
    unknown = [k for k in metadata if tag_for_keyword(k) is None]
    if unknown:
        raise DicomError(f"source.dicom.columns: {', '.join(map(repr, unknown))} not DICOM "
                         "keyword(s), e.g. PatientSex, PatientAge")
    group_keyword = [group] if group and tag_for_keyword(group) is not None else []
    return sorted({*metadata, "SOPInstanceUID", *group_keyword})


def header(path: str, keywords: list[str]) -> dict[str, str]:
    """The attributes `keywords` of one file as text ("" when absent or empty), PatientAge
    and other ages in whole years; the pixel data is not read."""
    ds = _read(path, stop_before_pixels=True, specific_tags=keywords)
    return {keyword: _text(ds, keyword) for keyword in keywords}


def _read(source: str | io.BytesIO, **options) -> Dataset:
    """pydicom's dataset of a file, or a DicomError saying why there is none."""
    try:
        return pydicom.dcmread(source, **options)
    except InvalidDicomError:
        raise DicomError("not a DICOM file: no 'DICM' mark at byte 128 (files without the "
                         "DICOM file header are not read)") from None
    except Exception as err:  # pydicom raises many kinds on a malformed file
        raise DicomError(f"not a readable DICOM file ({_reason(err)})") from None


def _text(ds: Dataset, keyword: str) -> str:
    if keyword not in ds or ds[keyword].value in (None, ""):
        return ""
    element = ds[keyword]
    value = element.value[0] if element.VM > 1 else element.value
    if element.VR == "AS":
        return age_in_years(str(value))
    return str(value).strip()


def age_in_years(age: str) -> str:
    """A DICOM age string ("045Y", "006M", "010W", "003D"; a bare number is years) in whole
    years, or "" when it is not one."""
    match = re.fullmatch(r"\s*(\d+)\s*([YMWD]?)\s*", age.upper())
    if not match:
        return ""
    return str(int(int(match[1]) / _PER_YEAR[match[2] or "Y"]))


def to_png(data: bytes, settings: DicomSettings) -> bytes:
    """One instance's image (its first frame when `settings.frames` allows one of several)
    as PNG bytes: 8-bit grey for MONOCHROME1/2, 8-bit RGB for colour."""
    ds = _dataset(data)
    pixels = _first_frame(ds, settings.frames)
    try:
        eight = _eight_bits(pixels, ds, settings.voi_window)
    except Exception as err:  # a malformed LUT, window or photometric interpretation
        raise DicomError(f"pixels do not convert to 8 bits ({_reason(err)})") from None
    buffer = io.BytesIO()
    Image.fromarray(eight).save(buffer, format="PNG")
    return buffer.getvalue()


def _dataset(data: bytes) -> Dataset:
    ds = _read(io.BytesIO(data))
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        kind = getattr(ds.get("SOPClassUID"), "name", "")
        raise DicomError(f"no pixel data (SOP class {kind})" if kind else "no pixel data")
    return ds


def _first_frame(ds: Dataset, frames: str) -> np.ndarray:
    """The decoded pixels of the only frame, or of the first when `frames` is "first"."""
    try:
        count = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise DicomError(f"Number of Frames {ds.NumberOfFrames!r} is not a number") from None
    if count > 1 and frames != "first":
        raise DicomError(f"{count} frames (a cine, volume or stack); set source.dicom.frames "
                         "to first to import the first frame")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise DicomError("no Transfer Syntax UID in the file header: the pixel data cannot "
                         "be read")
    named = f"transfer syntax {syntax.name} ({syntax})" if syntax.is_transfer_syntax else (
        f"transfer syntax {syntax}")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomError(f"{named} is not supported: no decoder reads it") from None
    if not decoder.is_available:
        raise DicomError(f"{named} needs a decoder that is not installed "
                         f"({'; '.join(decoder.missing_dependencies)})")
    try:
        return pixel_array(ds, index=0 if count > 1 else None)
    except Exception as err:  # each decoder plugin raises its own kinds
        pixels = _jpeg_12_bit(ds, count) if syntax == JPEGExtended12Bit else None
        if pixels is None:
            raise DicomError(f"pixel data in {named} does not decode ({_reason(err)})"
                             ) from None
        return pixels


def _jpeg_12_bit(ds: Dataset, count: int) -> np.ndarray | None:
    """The first frame of a grey 12-bit JPEG Extended stream decoded by GDCM, or None.

    libjpeg (pylibjpeg) refuses streams whose scan header ends spectral selection at 0 not
    63, a quirk of older CR/DX encoders (pydicom's JPEG-lossy.dcm); GDCM's IJG decoder reads
    them, but pydicom's GDCM plugin declines 12-bit JPEG Extended, so it is called here."""
    if int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("BitsStored", 0)) <= 8:
        return None
    try:
        import gdcm
    except ImportError:  # python-gdcm is in the lock; a venv older than it lacks it
        return None
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(next(generate_frames(ds.PixelData, number_of_frames=count)))
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((ds.Columns, ds.Rows, 1))
    image.SetDataElement(element)
    image.SetPhotometricInterpretation(gdcm.PhotometricInterpretation(
        gdcm.PhotometricInterpretation.MONOCHROME2))
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGExtendedProcess2_4))
    signed = int(ds.get("PixelRepresentation", 0))
    image.SetPixelFormat(gdcm.PixelFormat(1, 16, int(ds.BitsStored), int(ds.BitsStored) - 1,
                                          signed))
    decoded = image.GetBuffer()  # char* as str; None when GDCM cannot decode it either
    data = b"" if decoded is None else decoded.encode("utf-8", "surrogateescape")
    if len(data) != 2 * ds.Rows * ds.Columns:
        return None
    return np.frombuffer(data, np.int16 if signed else np.uint16).reshape(ds.Rows, ds.Columns)


def _eight_bits(pixels: np.ndarray, ds: Dataset, window: str | tuple[float, float]
                ) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":  # the palette's entries span their whole dtype
        rgb = apply_color_lut(pixels, ds)
        return _scaled(rgb, np.iinfo(rgb.dtype).max)
    if pixels.ndim == 3:  # RGB; the decoders return YBR as RGB
        return _scaled(pixels, 2 ** int(ds.BitsStored) - 1)
    grey = _windowed(apply_modality_lut(pixels, ds).astype(np.float64), ds, window)
    return 255 - grey if photometric == "MONOCHROME1" else grey


def _windowed(values: np.ndarray, ds: Dataset, window: str | tuple[float, float]
              ) -> np.ndarray:
    """Modality values to 0-255 through the window, or their own range without one."""
    if isinstance(window, tuple):
        center, width, function = *window, "LINEAR"
    elif window == "file" and "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = (_first(ds["WindowCenter"]), _first(ds["WindowWidth"]))
        function = ds.get("VOILUTFunction", "LINEAR")
    elif window == "file" and ds.get("VOILUTSequence"):
        return _through_lut(values, ds)
    else:
        low, high = values.min(), values.max()
        return _scaled(values - low, high - low)
    # pydicom's VOI windowing, onto the output range of 8 unsigned bits.
    view = Dataset()
    view.PhotometricInterpretation, view.BitsStored, view.PixelRepresentation = (
        "MONOCHROME2", 8, 0)
    view.WindowCenter, view.WindowWidth, view.VOILUTFunction = center, width, function
    return _scaled(apply_windowing(values, view), 255)


def _through_lut(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality values through the file's first VOI LUT (a table where a window is a line;
    CR, DX and mammograms often carry one) onto 0-255 by the bits its entries use: a
    descriptor that says 16 bits for 12-bit entries is a common quirk."""
    entries, first = ds.VOILUTSequence[0].LUTDescriptor[:2]
    top = int(apply_voi(np.arange(first, first + (entries or 2 ** 16)), ds).max())
    return _scaled(apply_voi(np.rint(values).astype(np.int64), ds), 2 ** top.bit_length() - 1)


def _first(element) -> float:
    return float(element.value[0] if element.VM > 1 else element.value)


def _scaled(values: np.ndarray, maximum: float) -> np.ndarray:
    """0..maximum to uint8 0..255 (all zeros for an empty range)."""
    if maximum <= 0:
        return np.zeros(values.shape, np.uint8)
    return np.clip(np.rint(values * (255.0 / maximum)), 0, 255).astype(np.uint8)


def _reason(err: Exception) -> str:
    """An exception's message on one line (decoder plugins report one line each)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
