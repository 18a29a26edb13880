"""Container formats, parsed to count their bytes: JPEG marker segments and ISOBMFF (AVIF) boxes.

- JPEG (ITU-T T.81): :func:`jpeg_segments` walks the markers up to the scan,
  :func:`jpeg_scan_span` finds the entropy-coded segment of a baseline (one-scan) file,
  :func:`jpeg_scan_data` returns it.
- ISOBMFF (ISO/IEC 14496-12): :func:`isobmff_boxes` lists the boxes, :func:`avif_payload`
  returns the AV1 payload of an AVIF file (its ``mdat`` content).

Anything malformed raises :class:`aelab.errors.DataError`.
"""

from __future__ import annotations

import struct

from ..errors import DataError

# -- JPEG markers (ITU-T T.81, B.1.1): FF xx, then a 2-byte big-endian length that counts
# itself, except the stand-alone markers SOI, EOI, TEM and RST0-7.
SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
_STANDALONE = {SOI, EOI, 0x01, *range(0xD0, 0xD8)}


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """``(marker, start, end)`` of each marker segment from SOI up to and including the
    first SOS (``start`` at its FF byte, ``end`` just past its length field's span)."""
    if data[:2] != b"\xff\xd8":
        raise DataError(f"expected a JPEG file (starting FF D8), found {data[:2].hex(' ') or 'nothing'}")
    out, i = [(SOI, 0, 2)], 2
    while True:
        if i + 2 > len(data) or data[i] != 0xFF:
            raise DataError(f"expected a JPEG marker at byte {i}, found "
                            f"{data[i:i + 2].hex(' ') or 'the end of the file'}; the file is damaged")
        while i + 1 < len(data) and data[i + 1] == 0xFF:  # fill bytes before a marker
            i += 1
        marker = data[i + 1]
        if marker in _STANDALONE:
            out.append((marker, i, i + 2))
            if marker == EOI:
                raise DataError("expected a scan (SOS marker) in the JPEG file, found EOI first")
            i += 2
            continue
        if i + 4 > len(data):
            raise DataError(f"expected a segment length at byte {i + 2}, found the end of the JPEG file")
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if end > len(data):
            raise DataError(f"JPEG segment FF {marker:02X} at byte {i} runs past the end of the file")
        out.append((marker, i, end))
        if marker == SOS:
            return out
        i = end


def jpeg_scan_span(data: bytes) -> tuple[int, int]:
    """``(start, end)`` of the entropy-coded segment of a baseline (one-scan) JPEG: from the
    end of the SOS segment to the first marker that is neither a stuffed FF 00 nor a
    restart marker, which must be EOI."""
    start = jpeg_segments(data)[-1][2]
    i = start
    while True:
        j = data.find(b"\xff", i)
        if j < 0 or j + 1 >= len(data):
            raise DataError("expected the JPEG scan to end with an EOI marker, found the end of the file")
        nxt = data[j + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffing or restart: still scan data
            i = j + 2
        elif nxt == 0xFF:                       # a fill byte before the next marker
            i = j + 1
        elif nxt == EOI:
            return start, j
        else:
            raise DataError(f"expected one scan then EOI (a baseline JPEG), found marker FF {nxt:02X} at byte {j}; "
                            "progressive JPEGs have several scans")


def jpeg_scan_data(data: bytes) -> bytes:
    """The entropy-coded segment of a baseline JPEG (without its headers and EOI)."""
    start, end = jpeg_scan_span(data)
    return data[start:end]


def isobmff_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """``(type, payload_start, box_end)`` of each box in ``data[start:end]`` (ISO/IEC 14496-12
    4.2: a 32-bit size counting the header, the 4-character type, a 64-bit size when the
    first is 1, to the end of the file when it is 0)."""
    end = len(data) if end is None else end
    out, i = [], start
    while i < end:
        if i + 8 > end:
            raise DataError(f"expected an ISOBMFF box header at byte {i}, found {end - i} byte(s); the file is damaged")
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        head = 8
        if size == 1:
            if i + 16 > end:
                raise DataError(f"expected a 64-bit box size at byte {i + 8}, found the end of the file")
            size, head = struct.unpack(">Q", data[i + 8:i + 16])[0], 16
        elif size == 0:
            size = end - i
        if size < head or i + size > end:
            raise DataError(f"ISOBMFF box {kind!r} at byte {i} has size {size}, outside the file; the file is damaged")
        out.append((kind.decode("latin-1"), i + head, i + size))
        i += size
    return out


def avif_payload(data: bytes) -> bytes:
    """The AV1 payload of an AVIF file: the content of its ``mdat`` box(es)."""
    boxes = isobmff_boxes(data)
    if not boxes or boxes[0][0] != "ftyp":
        raise DataError("expected an AVIF file (starting with an ftyp box), found "
                        f"{boxes[0][0] if boxes else 'nothing'}")
    mdat = [data[s:e] for kind, s, e in boxes if kind == "mdat"]
    if not mdat:
        raise DataError("expected an mdat box in the AVIF file, found none; the file is damaged")
    return b"".join(mdat)



__all__ = ["SOI", "EOI", "SOS", "jpeg_segments", "jpeg_scan_span", "jpeg_scan_data", "isobmff_boxes", "avif_payload"]
