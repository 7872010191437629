"""A PNG verified by its structure, without inflating its image data (issue 12.1: ingest).

:func:`check_png` reads the file once, chunk by chunk, and checks what can be checked without
decoding the pixels:

* the signature and a valid ``IHDR`` first (size within the pixel budget, a legal bit depth /
  colour type pair, compression and filter method 0, interlace 0 or 1);
* every chunk's length and CRC-32. The CRCs cover every byte of the compressed stream, so
  truncation (the file ends before ``IEND``) and bit rot are caught;
* ``IDAT`` chunks present and consecutive, ``IEND`` the last chunk (bytes after it are not
  chunks and are ignored, as libpng and Pillow ignore them);
* a valid zlib header at the start of the image data (deflate, window <= 32 KiB, header
  checksum, no preset dictionary), and enough compressed bytes for the declared size (deflate
  cannot exceed about 1032:1, so a stream shorter than that bound is cut short);
* the EXIF orientation, read as Pillow reads it after a full decode: ``eXIf`` and the text
  chunks (``Raw profile type exif``, XMP ``tiff:Orientation``) wherever they are, through
  Pillow's own chunk handlers.

What it cannot see is a stream whose CRCs match but whose deflate data is invalid (written that
way). Such a file passes ingest and is refused, by name, when the embedding decodes it in full
(the same policy as a JPEG 2000 frame damaged only in its finest resolution levels).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass

from core.dicom import PixelError

__all__ = ["PNG_SIGNATURE", "PngStructure", "check_png", "is_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CHUNK_LENGTH = 2**31 - 1  # the PNG spec's limit
MAX_CHUNKS = 1_000_000  # a real 64 Mpx PNG in 8 KiB IDATs has ~16k; beyond this is hostile
MAX_METADATA_BYTES = 16 * 1024**2  # eXIf / text chunks read for the orientation, all together
# Text / eXIf chunks read for the orientation: each costs Python objects here (and in Pillow's
# decode) whatever its size, so a million empty tEXt chunks (12 MB) would hold ~200 MB.
MAX_METADATA_CHUNKS = 4096
_READ = 1024**2
# Chunks whose contents Pillow reads for EXIF orientation (Image.getexif after a full decode).
_METADATA = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt"})
# Legal bit depths per colour type (PNG spec, IHDR).
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Deflate's best case is about 1032:1 (258-byte matches in 2 bits); stored data is never smaller
# than this fraction of what it inflates to.
_DEFLATE_MAX_RATIO = 1100


@dataclass(frozen=True)
class PngStructure:
    """What the chunk walk learnt. ``orientation`` is the EXIF orientation (1 when none)."""

    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlaced: bool
    n_chunks: int
    idat_bytes: int
    orientation: int


def is_png(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts with the PNG signature (never raises)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == PNG_SIGNATURE
    except OSError:
        return False


def _truncated(path: str | os.PathLike[str], what: str) -> PixelError:
    return PixelError(path, "truncated", f"image data is incomplete (PNG ends {what})")


def _broken(path: str | os.PathLike[str], what: str) -> PixelError:
    return PixelError(path, "unreadable", f"cannot decode image (broken PNG: {what})")


def _check_ihdr(path: str | os.PathLike[str], data: bytes, max_pixels: int) -> tuple[int, int, int, int, int]:
    if len(data) != 13:
        raise _broken(path, f"IHDR is {len(data)} bytes, not 13")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data)
    if not (0 < width <= MAX_CHUNK_LENGTH and 0 < height <= MAX_CHUNK_LENGTH):
        raise _broken(path, f"IHDR size {width}x{height}")
    if width * height > max_pixels:
        raise PixelError(path, "too_large", f"{height}x{width} = {width * height} pixels exceeds the "
                         f"budget max_pixels={max_pixels}")
    if depth not in _DEPTHS.get(colour, ()):
        raise _broken(path, f"IHDR bit depth {depth} with colour type {colour}")
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise _broken(path, f"IHDR methods compression={compression} filter={filtering} "
                      f"interlace={interlace}")
    return width, height, depth, colour, interlace


def _check_zlib_header(path: str | os.PathLike[str], head: bytes) -> None:
    cmf, flg = head[0], head[1]
    if cmf & 0x0F != 8 or cmf >> 4 > 7:
        raise _broken(path, f"image data is not a deflate stream (zlib header {head.hex()})")
    if (cmf * 256 + flg) % 31 or flg & 0x20:
        raise _broken(path, f"bad zlib header {head.hex()} in IDAT")


def _orientation(metadata: list[tuple[bytes, bytes]], path: str | os.PathLike[str]) -> int:
    """EXIF orientation as Pillow finds it after decoding: the chunks go through Pillow's own
    handlers (``PngStream``), then ``Image.getexif``. A text chunk Pillow refuses (too much
    text) refuses the file as Pillow's decode would; a broken EXIF block counts as none."""
    if not metadata:
        return 1
    from PIL import Image, PngImagePlugin

    stream = PngImagePlugin.PngStream(io.BytesIO(b"".join(data for _, data in metadata)))
    for cid, data in metadata:
        try:
            stream.call(cid, 0, len(data))
        except UnicodeDecodeError:  # Pillow stops reading chunks there, and so do we
            break
        except (EOFError, zlib.error):
            continue
        except ValueError as exc:  # MAX_TEXT_MEMORY and the like: the decode refuses it too
            raise _broken(path, str(exc)) from exc
    holder = Image.new("L", (1, 1))
    holder.info = stream.im_info
    try:
        return int(holder.getexif().get(0x0112, 1) or 1)
    except Exception:  # broken EXIF blocks are common and harmless (core.pixels ignores them)
        return 1


def check_png(path: str | os.PathLike[str], *, max_pixels: int) -> PngStructure:
    """Walk every chunk of the PNG at ``path`` (see the module's docstring); never inflates.

    Raises
    ------
    PixelError
        ``truncated`` when the file ends before ``IEND`` (or the image data is too short for
        the declared size), ``too_large`` for a size over ``max_pixels``, ``unreadable`` for a
        bad signature, IHDR, chunk layout, CRC or zlib header; the reason names the chunk.
    """
    with open(path, "rb") as handle:
        if handle.read(8) != PNG_SIGNATURE:
            raise _broken(path, "no PNG signature")
        offset, n_chunks, idat_bytes = 8, 0, 0
        ihdr: tuple[int, int, int, int, int] | None = None
        idat_state = "before"  # before -> inside -> after
        zlib_head = b""
        metadata: list[tuple[bytes, bytes]] = []
        metadata_bytes = 0
        animated_frames = False
        while True:
            header = handle.read(8)
            if len(header) < 8:
                raise _truncated(path, "before IEND" if ihdr else "inside its header")
            length, cid = struct.unpack(">I4s", header)
            n_chunks += 1
            if n_chunks > MAX_CHUNKS:
                raise _broken(path, f"more than {MAX_CHUNKS:,} chunks")
            if length > MAX_CHUNK_LENGTH:
                raise _broken(path, f"chunk length {length} at byte {offset}")
            if not all(65 <= c <= 90 or 97 <= c <= 122 for c in cid):
                raise _broken(path, f"chunk type {cid!r} at byte {offset}")
            if ihdr is None and cid != b"IHDR":
                raise _broken(path, f"first chunk is {cid.decode('ascii')}, not IHDR")
            if cid == b"IHDR" and length != 13:  # checked before reading: never hold a huge one
                raise _broken(path, f"IHDR is {length} bytes, not 13")
            if cid in _METADATA and not animated_frames and len(metadata) >= MAX_METADATA_CHUNKS:
                raise _broken(path, f"more than {MAX_METADATA_CHUNKS:,} text/EXIF chunks "
                              f"(another {cid.decode('ascii')} at byte {offset})")
            keep = (cid == b"IHDR" or (cid in _METADATA and not animated_frames
                                        and metadata_bytes + length <= MAX_METADATA_BYTES))
            crc = zlib.crc32(cid)
            kept = []
            remaining = length
            while remaining:
                piece = handle.read(min(remaining, _READ))
                if not piece:
                    raise _truncated(path, f"inside chunk {cid.decode('ascii')} at byte {offset}")
                crc = zlib.crc32(piece, crc)
                if cid == b"IDAT" and len(zlib_head) < 2:
                    zlib_head += piece[: 2 - len(zlib_head)]
                if keep:
                    kept.append(piece)
                remaining -= len(piece)
            stored = handle.read(4)
            if len(stored) < 4:
                raise _truncated(path, f"inside chunk {cid.decode('ascii')} at byte {offset}")
            if struct.unpack(">I", stored)[0] != crc & 0xFFFFFFFF:
                raise _broken(path, f"CRC mismatch in chunk {cid.decode('ascii')} at byte {offset}")
            data = b"".join(kept)
            if cid == b"IHDR":
                if ihdr is not None:
                    raise _broken(path, "a second IHDR")
                ihdr = _check_ihdr(path, data, max_pixels)
            elif cid == b"IDAT":
                if idat_state == "after":
                    raise _broken(path, f"IDAT chunks not consecutive (another at byte {offset})")
                idat_state = "inside"
                idat_bytes += length
            elif cid == b"IEND":
                break
            else:
                if idat_state == "inside":
                    idat_state = "after"
                if cid == b"fcTL" and idat_state == "after":
                    animated_frames = True  # Pillow stops reading metadata at the next frame
                if keep:
                    metadata.append((cid, data))
                    metadata_bytes += length
            offset += 12 + length
    if idat_state == "before":
        raise _broken(path, "no IDAT chunk (no image data)")
    if len(zlib_head) < 2:
        raise _truncated(path, "inside the image data's zlib header")
    _check_zlib_header(path, zlib_head)
    width, height, depth, colour, interlace = ihdr
    row_bytes = -(-width * depth * _SAMPLES[colour] // 8)
    inflated = height * (1 + row_bytes)
    if idat_bytes * _DEFLATE_MAX_RATIO < inflated:
        raise _truncated(path, f"with {idat_bytes:,} bytes of image data, too few for "
                         f"{width}x{height} pixels ({inflated:,} bytes inflated)")
    return PngStructure(width, height, depth, colour, bool(interlace), n_chunks, idat_bytes,
                        _orientation(metadata, path))
