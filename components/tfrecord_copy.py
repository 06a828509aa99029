"""A TFRecord file copied byte for byte, with each record's framing and both its masked
CRC32Cs checked on the way (google_crc32c: about as fast as the copy itself).

Apart from the ExampleGen component so that the Beam workers that copy import only this,
TensorFlow's file system (gs:// too) and the checksum: each DirectRunner worker of
multi_processing imports what it runs (1.8 s for this module, 3.7 s for the component).
"""

from __future__ import annotations

import struct

import google_crc32c
from tfx.dsl.io import fileio

from modules.errors import MedtfxError

# A TFRecord: its data's length and that length's checksum, the data, the data's checksum.
LENGTH, HEADER, CHECKSUM = struct.Struct("<Q"), struct.Struct("<QI"), struct.Struct("<I")
CHUNK_BYTES = 1 << 20  # the most of a record's data held at once


class DamagedRecordError(MedtfxError):
    """An input file that is not whole TFRecords: truncated, or a checksum that fails."""


def masked(crc: int) -> int:
    """A CRC32C masked as TFRecord stores it."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def copy_records(source: str, destination: str) -> int:
    """Copies the TFRecord file `source` to `destination` byte for byte, checking each
    record's framing and checksums; returns the number of records."""
    with fileio.open(source, "rb") as reader, fileio.open(destination, "wb") as writer:
        index = 0
        while header := reader.read(HEADER.size):
            fault = _copy_record(header, reader, writer)
            if fault:
                raise DamagedRecordError(f"{source}: record {index}: {fault}")
            index += 1
    return index


def _copy_record(header: bytes, reader, writer) -> str | None:
    """Copies the record whose header was read, in chunks; what is wrong with it, if
    anything."""
    if len(header) < HEADER.size:
        return "the file ends inside its header (truncated)"
    remaining, length_crc = HEADER.unpack(header)
    if masked(google_crc32c.value(header[:LENGTH.size])) != length_crc:
        return "its length fails its checksum (damaged, or not a TFRecord file)"
    writer.write(header)
    crc = 0
    while remaining:
        piece = reader.read(min(remaining, CHUNK_BYTES))
        if not piece:
            return "the file ends inside its data (truncated)"
        crc = google_crc32c.extend(crc, piece)
        writer.write(piece)
        remaining -= len(piece)
    footer = reader.read(CHECKSUM.size)
    if len(footer) < CHECKSUM.size:
        return "the file ends before its data checksum (truncated)"
    if masked(crc) != CHECKSUM.unpack(footer)[0]:
        return "its data fails its checksum (damaged)"
    writer.write(footer)
    return None
