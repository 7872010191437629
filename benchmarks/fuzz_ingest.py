"""Hostile input, at volume: mutate real DICOM, PNG, JPEG, CSV and ZIP inputs and feed them to
ingest; writes benchmarks/results/fuzz_ingest.json.

    nice .venv/bin/python benchmarks/fuzz_ingest.py --n 10000 [--seed 0]

Seeds are real files: pydicom's test DICOMs (native, RLE, JPEG, JPEG 2000, deflated, big
endian, multi-frame, preamble-less), small PNG and JPEG radiographs from
``../shared/data/covid-chestxray``, a metadata CSV naming real images, and ZIP archives of
class folders. Mutations: byte flips, truncation, inserted and deleted runs, DICOM tag values
made hostile (Rows, Columns, NumberOfFrames, BitsAllocated, SamplesPerPixel... huge, zero or
garbage), PNG IHDR dimensions and depths (CRC fixed so that the header is believed), JPEG SOF
dimensions, CSV re-encodings and hostile cells, ZIPs nested 1-40 deep, traversal names, lying
central directories.

Every input is checked to be either ingested (at least one image row) or reported with a
reason (a report row naming it, or a ``ValueError`` naming it for a whole-source refusal).
A crash is any other exception. After every ingest call the folder around the output is
listed: nothing may appear outside the output folder (for a ZIP source, nothing outside
``OUT/source`` other than ingest's own four files).

The suite runs the same harness, smaller, in ``tests/core/ingest/test_fuzz_ingest.py``.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pydicom  # noqa: E402
import pydicom.data  # noqa: E402

from core.ingest import ZipRefusedError, ingest  # noqa: E402

SHARED_DATA = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
COVID_IMAGES = SHARED_DATA / "covid-chestxray" / "images"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "fuzz_ingest.json"

DICOM_SEEDS = (
    "CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm",
    "SC_rgb_small_odd.dcm", "MR_small_jp2klossless.dcm", "rtdose.dcm",
    "SC_ybr_full_422_uncompressed.dcm", "image_dfl.dcm", "emri_small_jpeg_2k_lossless.dcm",
    "SC_rgb_rle_2frame.dcm", "no_meta.dcm", "MR_small_bigendian.dcm", "SC_rgb.dcm",
)
# Input kinds and their share of the inputs.
KINDS = (("dicom", 0.40), ("png", 0.15), ("jpeg", 0.15), ("csv", 0.15), ("zip", 0.15))
IMAGE_BATCH = 40  # image inputs ingested together, as one folder
INGEST_FILES = {"images.parquet", "patients.parquet", "ingest_report.csv", "manifest.json"}
SOURCE_ERRORS = (ValueError, FileNotFoundError, ZipRefusedError)  # exact types, see _is_refusal


# --------------------------------------------------------------------------------- seeds


def load_seeds(n_images: int = 6) -> dict[str, list[bytes]]:
    """Real files to mutate: {kind: [bytes, ...]} for dicom, png and jpeg."""
    dicoms = [Path(pydicom.data.get_testdata_file(name)).read_bytes() for name in DICOM_SEEDS]
    small = sorted((p for p in COVID_IMAGES.iterdir() if p.stat().st_size < 120_000),
                   key=lambda p: p.name)
    if not small:
        raise FileNotFoundError(f"{COVID_IMAGES}: no small images to fuzz from")
    pngs = [p.read_bytes() for p in small if p.suffix.lower() == ".png"][:n_images]
    jpegs = [p.read_bytes() for p in small if p.suffix.lower() in (".jpg", ".jpeg")][:n_images]
    return {"dicom": dicoms, "png": pngs, "jpeg": jpegs}


# ---------------------------------------------------------------------- generic mutations


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 2, 8, 64))):
        position = rng.randrange(len(out))
        out[position] = rng.randrange(256)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(0, len(data))]


def splice(data: bytes, rng: random.Random) -> bytes:
    position = rng.randrange(len(data))
    if rng.random() < 0.5:  # delete a run
        return data[:position] + data[position + rng.randrange(1, 4096):]
    filler = rng.choice((b"\x00", b"\xff", bytes([rng.randrange(256)])))
    return data[:position] + filler * rng.choice((1, 7, 4096)) + data[position:]


GENERIC = (flip_bytes, truncate, splice)


# -------------------------------------------------------------------------------- DICOM

_US_TAGS = {  # keyword: (group, element) of Unsigned Short image-pixel attributes
    "Rows": (0x0028, 0x0010), "Columns": (0x0028, 0x0011), "SamplesPerPixel": (0x0028, 0x0002),
    "BitsAllocated": (0x0028, 0x0100), "BitsStored": (0x0028, 0x0101),
    "HighBit": (0x0028, 0x0102), "PixelRepresentation": (0x0028, 0x0103),
    "PlanarConfiguration": (0x0028, 0x0006),
}
_US_VALUES = (0, 1, 2, 3, 7, 8, 12, 16, 24, 32, 64, 255, 4096, 32768, 65535)
_TEXT_VALUES = {
    "NumberOfFrames": ("0", "-1", "2", "1000", "1000000", "2147483647", "abc", "1.5", ""),
    "PhotometricInterpretation": ("MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL_422", "", "XYZ"),
    "PresentationLUTShape": ("INVERSE", "IDENTITY", "garbage"),
    "BurnedInAnnotation": ("YES", "NO", "maybe"),
    "WindowWidth": ("0", "-5", "1e309", "abc"),
    "RescaleSlope": ("0", "nan", "1e308", "x"),
    "PatientID": ("=cmd|' /C calc'!A0", "../../etc", "\u00e9\u00e8", "A" * 64),
}
_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
             "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5",
             "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.1.99", "1.2.3.4")


def _patch_us(data: bytes, tag: tuple[int, int], value: int) -> bytes | None:
    """Overwrite a US element's value in the raw bytes (explicit or implicit VR, LE or BE)."""
    for endian in ("<", ">"):
        key = struct.pack(endian + "HH", *tag)
        for layout in (b"US" + struct.pack(endian + "H", 2), struct.pack(endian + "I", 2)):
            at = data.find(key + layout)
            if at >= 0:
                start = at + len(key) + len(layout)
                return data[:start] + struct.pack(endian + "H", value) + data[start + 2:]
    return None


def mutate_dicom(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    roll = rng.random()
    if roll < 0.35:
        keyword = rng.choice(sorted(_US_TAGS))
        patched = _patch_us(data, _US_TAGS[keyword], rng.choice(_US_VALUES))
        if patched is not None:
            return patched, f"dicom:{keyword}"
    if roll < 0.65:
        keyword = rng.choice(sorted(_TEXT_VALUES) + ["TransferSyntaxUID", "PixelData"])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(io.BytesIO(data), force=True)
                if keyword == "TransferSyntaxUID":
                    ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
                    ds.file_meta.TransferSyntaxUID = rng.choice(_SYNTAXES)
                elif keyword == "PixelData":
                    if "PixelData" in ds:
                        del ds.PixelData
                else:
                    setattr(ds, keyword, rng.choice(_TEXT_VALUES[keyword]))
                buffer = io.BytesIO()
                ds.save_as(buffer)
            return buffer.getvalue(), f"dicom:{keyword}"
        except Exception:  # pydicom refuses to write some values: fall through to bytes
            pass
    mutation = rng.choice(GENERIC)
    return mutation(data, rng), f"bytes:{mutation.__name__}"


# ---------------------------------------------------------------------------- PNG / JPEG


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def mutate_png(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if rng.random() < 0.5 and data[12:16] == b"IHDR":
        width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
        choice = rng.randrange(4)
        if choice == 0:
            width, height = rng.choice(((7999, 8000), (100_000, 100_000), (2**31 - 1, 1), (0, 0),
                                        (1, 2**31 - 1), (65_535, 65_535)))
        elif choice == 1:
            depth = rng.choice((1, 2, 4, 8, 16, 3, 0, 255))
        elif choice == 2:
            colour = rng.choice((0, 2, 3, 4, 6, 1, 7))
        else:
            interlace = rng.choice((0, 1, 2))
        ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, compression, filtering, interlace)
        fix_crc = rng.random() < 0.8  # with a good CRC the header is believed
        chunk = _png_chunk(b"IHDR", ihdr) if fix_crc else data[8:12] + b"IHDR" + ihdr + data[29:33]
        return data[:8] + chunk + data[33:], f"png:ihdr{choice}"
    if rng.random() < 0.3:  # a chunk length that claims gigabytes
        at = data.find(b"IDAT")
        if at >= 4:
            return data[: at - 4] + struct.pack(">I", 0x7FFFFFFF) + data[at:], "png:idat_length"
    mutation = rng.choice(GENERIC)
    return mutation(data, rng), f"bytes:{mutation.__name__}"


def mutate_jpeg(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if rng.random() < 0.5:
        match = re.search(rb"\xff[\xc0\xc1\xc2]", data)
        if match:
            at = match.start() + 5  # marker(2) length(2) precision(1) height(2) width(2)
            height, width = rng.choice(((65_535, 65_535), (0, 0), (1, 65_535), (30_000, 30_000),
                                        (8000, 7999)))
            return data[:at] + struct.pack(">HH", height, width) + data[at + 4:], "jpeg:sof"
    mutation = rng.choice(GENERIC)
    return mutation(data, rng), f"bytes:{mutation.__name__}"


# ------------------------------------------------------------------------------------ CSV

_CSV_CELLS = ("=cmd|' /C calc'!A0", "+1", "-1", "@SUM(1)", "\t", "", "\x00", "\"", "a\"b",
              "../outside.png", "/etc/passwd", "sub/../a.png", "C:\\x.png", "\u00e9", "肺炎",
              "x" * 10_000, "1e309", "nan", "NaN", "M", "F", "045Y", "-3")


def make_csv(rng: random.Random) -> tuple[bytes, str]:
    """A metadata CSV naming a.png / b.jpg (present), plus hostile rows, then mutated."""
    header = ["patient_id", "path", "label", "age", "sex", "notes"]
    rows = [["p1", "a.png", "COVID", "45", "M", "fever"], ["p2", "b.jpg", "Normal", "60", "F", "none"]]
    for _ in range(rng.randrange(0, 6)):
        rows.append([rng.choice(_CSV_CELLS) for _ in header])
    if rng.random() < 0.2:
        header = header + [rng.choice(_CSV_CELLS)] * rng.randrange(1, 4)  # odd extra columns
    lines = [",".join(header)] + [",".join(f'"{c}"' if rng.random() < 0.5 else c for c in row) for row in rows]
    text = "\n".join(lines) + "\n"
    encoding = rng.choice(("utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252",
                           "shift_jis", "latin-1"))
    raw = text.encode(encoding, errors="replace")
    tag = f"csv:{encoding}"
    if rng.random() < 0.4:
        mutation = rng.choice(GENERIC)
        raw, tag = mutation(raw, rng) or b"", f"{tag}+{mutation.__name__}"
    return raw, tag


# ------------------------------------------------------------------------------------ ZIP


def _nested_zip(depth: int, payload: bytes) -> bytes:
    data = payload
    for level in range(depth):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"level{level}.zip" if level else "inner.png", data)
        data = buffer.getvalue()
    return data


def make_zip(seeds: dict[str, list[bytes]], rng: random.Random) -> tuple[bytes, str]:
    """A ZIP of class folders with real images, plus a nested chain and hostile members."""
    buffer = io.BytesIO()
    tags = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("COVID/a.png", rng.choice(seeds["png"]))
        archive.writestr("Normal/b.jpg", rng.choice(seeds["jpeg"]))
        if rng.random() < 0.5:
            depth = rng.choice((1, 2, 5, 10, 40))
            archive.writestr("COVID/nested.zip", _nested_zip(depth, rng.choice(seeds["png"])))
            tags.append(f"nested{depth}")
        if rng.random() < 0.3:
            name = rng.choice(("../escape.png", "../../escape.png", "/abs.png", "COVID/../../x.png",
                               "C:/win.png", "COVID/\u00e9.png", "Normal/" + "n" * 300 + ".png"))
            archive.writestr(name, rng.choice(seeds["png"]))
            tags.append("name")
        if rng.random() < 0.2:
            link = zipfile.ZipInfo("COVID/link.png")
            link.external_attr = (0o120777 << 16)
            archive.writestr(link, "/etc/passwd")
            tags.append("symlink")
        if rng.random() < 0.2:
            archive.writestr("Normal/zeros.dcm", bytes(rng.choice((1024, 1024**2))))
            tags.append("zeros")
    data = buffer.getvalue()
    if rng.random() < 0.3:
        mutation = rng.choice(GENERIC)
        data = mutation(data, rng)
        tags.append(mutation.__name__)
    elif rng.random() < 0.2:  # a central directory that lies about a member's size
        at = data.find(b"PK\x01\x02")
        if at >= 0:
            data = data[: at + 24] + struct.pack("<I", rng.choice((0, 1, 0xFFFFFFF0))) + data[at + 28:]
            tags.append("cd_size")
    return data, "zip:" + "+".join(tags or ["plain"])


# --------------------------------------------------------------------------------- runner


@dataclass
class FuzzCounts:
    inputs: int = 0
    by_kind: collections.Counter = field(default_factory=collections.Counter)
    ingested: int = 0
    reported: collections.Counter = field(default_factory=collections.Counter)  # by status
    refused: collections.Counter = field(default_factory=collections.Counter)  # source-level
    unaccounted: list[str] = field(default_factory=list)
    crashes: list[dict] = field(default_factory=list)
    outside_writes: list[str] = field(default_factory=list)
    max_rows_per_input: int = 0  # image rows from one input file (seeds: <= 15 frames)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "inputs": self.inputs,
            "by_kind": dict(sorted(self.by_kind.items())),
            "ingested": self.ingested,
            "reported": sum(self.reported.values()),
            "reported_by_reason": dict(self.reported.most_common()),
            "refused_whole_source": sum(self.refused.values()),
            "refused_by_reason": dict(self.refused.most_common()),
            "unaccounted": len(self.unaccounted),
            "unaccounted_examples": self.unaccounted[:10],
            "crashes": len(self.crashes),
            "crash_examples": self.crashes[:10],
            "outside_writes": len(self.outside_writes),
            "outside_write_examples": self.outside_writes[:10],
            "max_rows_per_input": self.max_rows_per_input,
            "seconds": round(self.seconds, 1),
        }


def _listing(root: Path) -> set[str]:
    return {os.fsencode(p.relative_to(root)).decode("utf-8", "backslashreplace") for p in root.rglob("*")}


def _is_refusal(error: BaseException) -> bool:
    """A whole-source refusal is one of the documented types, not a leaked library error."""
    return type(error) in SOURCE_ERRORS and bool(str(error).strip())


def _refusal_key(error: BaseException) -> str:
    text = str(error)
    for key in ("ratio", "not a ZIP", "unreadable ZIP", "NUL", "ambiguous", "byte-order mark",
                "no image-path column", "not a readable CSV", "missing required", "cannot tell the layout",
                "no image files", "over the limit", "not valid UTF-8", "cannot join"):
        if key in text:
            return key
    return text.split(":")[-1].strip()[:60]


def _crash(counts: FuzzCounts, tag: str, error: BaseException) -> None:
    counts.crashes.append({"input": tag, "error": f"{type(error).__name__}: {error}"[:300],
                           "where": traceback.format_exception(error)[-2][:300]})


def _check_outside(counts: FuzzCounts, parent: Path, before: set[str], out_name: str,
                   extraction: bool) -> None:
    for added in sorted(_listing(parent) - before):
        inside = added == out_name or added.startswith(out_name + "/")
        if inside and extraction:
            relative = added[len(out_name) + 1:]
            inside = relative in INGEST_FILES or relative == "source" or relative.startswith("source/")
            inside = inside or relative == "previews" or re.fullmatch(  # the stored previews
                r"previews/(index\.parquet|pack-[0-9a-f]{12}-[0-9]{5}\.bin)", relative) is not None
            inside = inside or added == out_name
        if not inside:
            counts.outside_writes.append(added)


def _run_image_batch(batch: list[tuple[str, bytes, str]], root: Path, counts: FuzzCounts) -> None:
    source = root / "src"
    source.mkdir(parents=True)
    for name, data, _tag in batch:
        (source / name).write_bytes(data)
    before = _listing(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = ingest(source, root / "out", layout="dicom", workers=2).dataset
    except BaseException as error:  # noqa: BLE001 - a crash is the thing being counted
        if isinstance(error, KeyboardInterrupt):
            raise
        if len(batch) == 1:
            _crash(counts, batch[0][2], error)
            return
        shutil.rmtree(root)
        for index, item in enumerate(batch):  # find which input(s) crashed
            _run_image_batch([item], root.with_name(f"{root.name}-{index}"), counts)
        return
    _check_outside(counts, root, before, "out", extraction=False)
    ingested = {Path(p).name for p in dataset.images["path"]}
    if len(dataset.images):
        rows_per_file = dataset.images["path"].value_counts().max()
        counts.max_rows_per_input = max(counts.max_rows_per_input, int(rows_per_file))
    reasons = {Path(p).name: (s, r) for p, s, r in
               zip(dataset.report["path"], dataset.report["status"], dataset.report["reason"], strict=True)}
    for name, _data, tag in batch:
        if name in ingested:
            counts.ingested += 1
        elif name in reasons and reasons[name][1].strip():
            counts.reported[reasons[name][0]] += 1
        else:
            counts.unaccounted.append(tag)
    shutil.rmtree(root)


def _run_source(kind: str, data: bytes, tag: str, seeds: dict[str, list[bytes]], root: Path,
                counts: FuzzCounts, rng: random.Random) -> None:
    """One CSV or ZIP input, ingested as a whole source."""
    study = root / "study"
    study.mkdir(parents=True)
    (study / "a.png").write_bytes(seeds["png"][0])
    (study / "b.jpg").write_bytes(seeds["jpeg"][0])
    if kind == "csv":
        target = study / "meta.csv"
        target.write_bytes(data)
        if rng.random() < 0.5:
            call = lambda: ingest(target, root / "out", layout="image-csv", workers=2)  # noqa: E731
        else:  # joined onto a class-folder tree with --metadata
            (study / "COVID").mkdir()
            shutil.move(study / "a.png", study / "COVID" / "a.png")
            shutil.move(study / "b.jpg", study / "COVID" / "b.jpg")
            target = target.rename(root / "meta.csv")
            call = lambda: ingest(study, root / "out", layout="class-folders",  # noqa: E731
                                  metadata=target, workers=2)
    else:
        target = root / "upload.zip"
        target.write_bytes(data)
        call = lambda: ingest(target, root / "out", workers=2)  # noqa: E731
    before = _listing(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call()
    except BaseException as error:  # noqa: BLE001
        if isinstance(error, KeyboardInterrupt):
            raise
        if _is_refusal(error) and target.name in str(error):
            counts.refused[_refusal_key(error)] += 1
        else:
            _crash(counts, tag, error)
        _check_outside(counts, root, before, "out", extraction=kind == "zip")
        shutil.rmtree(root)
        return
    _check_outside(counts, root, before, "out", extraction=kind == "zip")
    dataset = result.dataset
    if len(dataset.images):
        counts.ingested += 1
    elif len(dataset.report) and (dataset.report["reason"].str.strip() != "").all():
        counts.reported[str(dataset.report["status"].iloc[0])] += 1
    else:
        counts.unaccounted.append(tag)
    shutil.rmtree(root)


def run_fuzz(n: int, *, seed: int = 0, workdir: Path | None = None,
             progress: Callable[[int, int], None] | None = None) -> FuzzCounts:
    """Generate ``n`` mutated inputs from ``seed`` and ingest them all; returns the counts."""
    rng = random.Random(seed)
    seeds = load_seeds()
    counts = FuzzCounts()
    started = time.perf_counter()
    owned = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-ingest-")) if owned else Path(workdir)
    parent_before = _listing(workdir.parent) if not owned else None
    kinds, weights = zip(*KINDS, strict=True)
    pending: list[tuple[str, bytes, str]] = []
    suffix = {"dicom": ".dcm", "png": ".png", "jpeg": ".jpg"}
    try:
        for index in range(n):
            kind = rng.choices(kinds, weights)[0]
            counts.inputs += 1
            counts.by_kind[kind] += 1
            if kind in suffix:
                mutate = {"dicom": mutate_dicom, "png": mutate_png, "jpeg": mutate_jpeg}[kind]
                data, tag = mutate(rng.choice(seeds[kind]), rng)
                # Some inputs lose their suffix or get the wrong one, as uploads do.
                name_suffix = rng.choice((suffix[kind], suffix[kind], "", ".png", ".dcm"))
                pending.append((f"in{index:06d}{name_suffix}", data, tag))
                if len(pending) >= IMAGE_BATCH:
                    _run_image_batch(pending, workdir / f"batch{index:06d}", counts)
                    pending = []
            else:
                data, tag = make_csv(rng) if kind == "csv" else make_zip(seeds, rng)
                _run_source(kind, data, tag, seeds, workdir / f"source{index:06d}", counts, rng)
            if progress:
                progress(index + 1, n)
        if pending:
            _run_image_batch(pending, workdir / "batch-last", counts)
        leftovers = _listing(workdir)
        counts.outside_writes.extend(sorted(leftovers))  # every input's folder was removed
        if parent_before is not None:
            counts.outside_writes.extend(sorted(_listing(workdir.parent) - parent_before - {workdir.name}
                                                - {p for p in _listing(workdir.parent)
                                                   if p.startswith(workdir.name + "/")}))
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
    counts.seconds = time.perf_counter() - started
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of inputs (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fuzz-ingest-") as parent:
        workdir = Path(parent) / "work"
        workdir.mkdir()

        def progress(done: int, total: int) -> None:
            if done % 500 == 0 or done == total:
                print(f"{done}/{total}", file=sys.stderr, flush=True)

        counts = run_fuzz(args.n, seed=args.seed, workdir=workdir, progress=progress)
    result = {"n": args.n, "seed": args.seed, **counts.as_dict(),
              "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("examples")}, indent=2))
    return 0 if not counts.crashes and not counts.outside_writes and not counts.unaccounted else 1


if __name__ == "__main__":
    raise SystemExit(main())
