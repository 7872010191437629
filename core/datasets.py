"""The datasets a user has: ingested folders under ``datasets_root()``, side by side.

Who may write a dataset folder: a new name is *claimed* by creating its folder (an atomic
``mkdir``, so two users racing for one name cannot both win) together with ``owner.json``.
An existing dataset is replaced only when the caller says so explicitly (``replace=True``)
and is its owner or an admin; the demo cohort is never replaced; a folder without an owner
(made by the command line) only by an admin.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.atomic import atomic_write_text, is_temp
from core.ingest import WARNING_STATUSES, Dataset, IngestResult, ingest, load_dataset
from core.notes import hide_paths
from core.settings import cache_root, datasets_root

DEMO_NAME = "demo-cardiac-mri"
OWNER_FILE = "owner.json"
# A letter or digit first (so never "." or ".."), then up to 63 letters, digits, "-", "_", ".".
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# The rule above in plain words, shown next to the name field before anything is refused.
NAME_RULES = ("Start with a letter or digit, then use only letters, digits, '-', '_' and '.' "
              "(no spaces, brackets or slashes); 64 characters at most.")


class DatasetExistsError(ValueError):
    """The dataset name is taken and the caller did not ask to replace it."""


def validate_dataset_name(name: str) -> str:
    """``name`` stripped, if it is a safe new dataset name; never touches the disk.

    Raises ``ValueError`` naming the rule: a letter or digit first, then letters, digits,
    ``-``, ``_`` or ``.``; 64 characters at most (so ``.``, ``..``, ``a/b`` are refused).
    """
    cleaned = name.strip() if isinstance(name, str) else ""
    if DATASET_NAME.fullmatch(cleaned) is None:
        raise ValueError(
            f"dataset name {name!r} is not allowed: start with a letter or digit, then use only "
            "letters, digits, '-', '_' and '.' (64 characters at most)"
        )
    return cleaned


def suggest_dataset_name(file_name: str) -> str:
    """A dataset name that passes ``validate_dataset_name``, made from an uploaded file name:
    the extension is dropped, letters are lower-cased and every run of other characters becomes
    one "-" ("Covid chest xrays (40).zip" -> "covid-chest-xrays-40"). Only the last path part
    is used. Gives "" when nothing usable is left (e.g. "().zip").
    """
    base = re.split(r"[\\/]", str(file_name))[-1]
    stem = re.sub(r"\.(zip|tar\.gz|tgz|tar|csv)$", "", base, flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:64].strip("-")
    return slug if slug and DATASET_NAME.fullmatch(slug) else ""


def label_source(layout: str, csv_label_column: str | None = None) -> str:
    """Where an ingest takes ground-truth labels from, in words, for ``layout`` and the CSV
    column mapped to ``label`` (``None`` when no metadata CSV gives labels).

    A CSV label column wins: the ingest joins it over what the layout gives, so for a
    class-folders upload with a CSV the labels come from the CSV (folder names only fill rows
    the CSV has no label for).
    """
    if csv_label_column:
        fallback = " (folder names where the CSV has none)" if layout == "class-folders" else ""
        return f"the CSV column '{csv_label_column}'{fallback}"
    return {
        "class-folders": "the folder names (one folder per label)",
        "covid-chestxray": "the 'finding' column of the dataset's metadata.csv",
        "patient-csv": "the CSV's label column, if it has one",
        "image-csv": "the CSV's label column, if it has one",
        "dicom": "nowhere: DICOM headers carry no diagnosis (add a metadata CSV with a label column)",
    }.get(layout, f"the {layout} layout")


def list_datasets(root: Path | None = None) -> list[str]:
    """Names of the ingested datasets under ``root``, demo first, then alphabetical."""
    root = Path(root or datasets_root())
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if (p / "images.parquet").is_file() and not is_temp(p))
    return sorted(names, key=lambda n: (n != DEMO_NAME, n))


def dataset_path(name: str, root: Path | None = None) -> Path:
    """The folder of dataset ``name``; raises ``ValueError`` unless it is a plain folder name
    directly under the datasets root (``..``, ``.``, ``a/b`` are refused)."""
    path = Path(root or datasets_root()) / name
    if path.resolve().parent != Path(root or datasets_root()).resolve():
        raise ValueError(f"dataset name {name!r} must be a plain folder name")
    return path


def open_dataset(name: str, root: Path | None = None) -> Dataset:
    return load_dataset(dataset_path(name, root))


def demo_dataset_ready(root: Path | None = None) -> bool:
    """Whether the demo cohort has been generated and ingested (a file check, nothing more)."""
    return (dataset_path(DEMO_NAME, root) / "images.parquet").is_file()


def ensure_demo_dataset(root: Path | None = None, *, progress=None) -> Dataset:
    """Generate (once) the synthetic demo cohort and ingest it (once); return it.

    ``progress(fraction, message)``, when given, hears about both steps (generating is the
    first half, reading it in the second)."""
    from core.demo import ensure_demo_cohort

    target = dataset_path(DEMO_NAME, root)
    if (target / "images.parquet").is_file():
        return load_dataset(target)

    def generated(done: int, total: int) -> None:
        progress(0.5 * done / total, f"Generating the demo cohort: {done}/{total} patients")

    def read(done: int, total: int, _name: str) -> None:
        progress(0.5 + 0.5 * done / max(total, 1), f"Reading the demo cohort in: {done}/{total} files")

    cohort = ensure_demo_cohort(cache_root() / "demo-cohort", progress=generated if progress else None)
    return ingest(cohort, target, name=DEMO_NAME, progress=read if progress else None).dataset


def dataset_manifest(name: str, root: Path | None = None) -> dict:
    path = dataset_path(name, root) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def dataset_owner(name: str, root: Path | None = None) -> str | None:
    """The user id that created dataset ``name``, or None (no owner file, e.g. the CLI's)."""
    path = dataset_path(name, root) / OWNER_FILE
    try:
        return json.loads(path.read_text()).get("user_id")
    except (OSError, ValueError, AttributeError):
        return None


def dataset_exists(name: str, root: Path | None = None) -> bool:
    """True when the name is taken: an ingested dataset or a folder being ingested."""
    return dataset_path(validate_dataset_name(name), root).exists()


def check_dataset_target(name: str, *, user_id: str, is_admin: bool, replace: bool = False,
                         root: Path | None = None) -> Path:
    """The folder a new ingest named ``name`` may write, after checking who may write it.

    Never touches the disk. Raises ``ValueError`` for a bad name, ``DatasetExistsError`` when
    the name is taken and ``replace`` is False, ``PermissionError`` for the demo cohort, or a
    dataset that belongs to another user (admins may replace those).
    """
    name = validate_dataset_name(name)
    target = dataset_path(name, root)
    if name == DEMO_NAME:
        raise PermissionError(f"{DEMO_NAME!r} is the built-in demo cohort and is never replaced; pick another name")
    if not target.exists():
        return target
    owner = dataset_owner(name, root)
    if owner != user_id and not is_admin:
        raise PermissionError(f"dataset {name!r} belongs to another user; pick another name")
    if not replace:
        raise DatasetExistsError(f"dataset {name!r} already exists; confirm to replace it, or pick another name")
    return target


def claim_dataset(name: str, *, user_id: str, is_admin: bool, replace: bool = False,
                  root: Path | None = None) -> tuple[Path, bool]:
    """Check (``check_dataset_target``) and claim ``name`` for ``user_id``.

    Returns ``(folder, created)``: ``created`` is True when this call made the folder (the
    caller removes it if the ingest then fails, with ``release_dataset``). Raises what
    ``check_dataset_target`` raises, and ``DatasetExistsError`` when another session claimed
    the name between the check and the claim.
    """
    target = check_dataset_target(name, user_id=user_id, is_admin=is_admin, replace=replace, root=root)
    created = False
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.mkdir()
        except FileExistsError as error:
            raise DatasetExistsError(f"dataset {name!r} was just created by someone else; pick another name") from error
        created = True
    if created or dataset_owner(name, root) is None:  # an admin replacing an unowned one takes it
        atomic_write_text(target / OWNER_FILE, json.dumps({
            "user_id": user_id, "claimed": datetime.now(UTC).isoformat(timespec="seconds"),
        }))
    return target, created


def release_dataset(name: str, root: Path | None = None) -> None:
    """Remove the folder of a claimed dataset whose first ingest failed (never the demo)."""
    from core.roots import remove_tree_inside

    if validate_dataset_name(name) == DEMO_NAME:
        return
    remove_tree_inside(dataset_path(name, root), Path(root or datasets_root()))


@dataclass(frozen=True)
class DatasetCounts:
    """What the Data page shows as metrics."""

    n_images: int
    n_patients: int
    n_not_ingested: int  # refused files or rows
    n_warnings: int  # ingested, with a warning (e.g. fewer slices than the CSV said)
    n_with_label: int  # images with a ground-truth label


def dataset_counts(dataset: Dataset) -> DatasetCounts:
    report = dataset.report
    warnings = int(report["status"].isin(WARNING_STATUSES).sum()) if len(report) else 0
    return DatasetCounts(
        n_images=len(dataset.images),
        n_patients=len(dataset.patients),
        n_not_ingested=len(report) - warnings,
        n_warnings=warnings,
        n_with_label=int(dataset.images["label"].notna().sum()) if "label" in dataset.images else 0,
    )


def ingest_summary_status(result: IngestResult, *, csv_label_column: str | None = None) -> tuple[str, str]:
    """``(level, message)`` after an ingest: level is "success", "warning" (some files or rows
    not ingested, or warnings) or "error" (nothing ingested); the message says how many, and
    where the ground-truth labels came from (``label_source``; ``csv_label_column`` is the
    metadata CSV column mapped to ``label``, if any), followed by the layout reader's notes
    (which image column, where names were looked up, a single-class warning)."""
    counts = dataset_counts(result.dataset)
    name = result.dataset.name
    labels = (f"Ground-truth labels for {counts.n_with_label} images, from "
              f"{label_source(result.layout, csv_label_column)}." if counts.n_with_label
              else "No ground-truth labels.")
    head = (f"Ingested {counts.n_images} images from {counts.n_patients} patients as **{name}** "
            f"({result.layout} layout). {labels}")
    if counts.n_images == 0:
        return "error", (f"Nothing was ingested into **{name}**: {counts.n_not_ingested} files or rows refused. "
                         "The ingest report below says why for each.")
    notes = "".join(f"\n\n{hide_paths(note)}" for note in result.notes)  # no server paths on a page
    if counts.n_not_ingested or counts.n_warnings:
        return "warning", (f"{head} {counts.n_not_ingested} files or rows not ingested and "
                           f"{counts.n_warnings} warnings: see the ingest report below.{notes}")
    warned = any(note.lower().startswith("warning") for note in result.notes)
    return ("warning" if warned else "success"), head + notes
