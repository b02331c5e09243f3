"""The gallery: people enrolled with their face templates, 1:1 verification against a claimed identity,
1:N identification, and an audit log of every decision, stored in one SQLite file or, shared by several
processes, in a PostgreSQL database named by URL (`PostgresStore`, the ``postgres`` extra).

    Gallery            the verbs: enroll / enroll_folder / enroll_bulk / enroll_video, verify, identify, reembed
                       (``core``; the enroll verbs in ``enrolling``, verify and identify in ``search``)
    Store              the storage protocol; SQLiteStore its embedded implementation
    GalleryIndex       in-process 1:N search kept in step with the store: exact, FAISS past 50k templates
                       (the ``faiss`` extra); a PostgreSQL gallery searches inside the database instead
    ExactIndex         in-process exact 1:N search, reloaded when the store changes
    QualityGates       enrollment gate thresholds (face count, size, pose, sharpness, duplicates)
    check_name         the rule every person's name follows (``siamface.gallery.names``)

Biometric data: removing a person deletes their templates and kept images, the freed bytes overwritten;
audit rows stay, unchanged, with the person's opaque reference (a hash-chained log of every decision and change:
``Store.verify_audit``). `export_gallery` / `import_gallery`
move a gallery as one documented JSON-lines file (see ``siamface.gallery.exchange``). Images are kept only by galleries created with ``keep_images=True``, and unencrypted.
"""

from __future__ import annotations

from . import synthetic  # noqa: F401  (siamface.gallery.synthetic, the benchmarks' galleries)
from .backends import gallery_exists, open_store
from .core import DEFAULT_FRACTION, RULES, Gallery, calibration_file_for
from .enroll import CaptureFrame, QualityGates, assess, image_files, pose, sharpness, video_frames
from .exchange import export_gallery, export_images, import_gallery, import_into
from .index import APPROX_MIN_TEMPLATES, ExactIndex, GalleryIndex, Hit
from .names import InvalidNameError, check_name
from .postgres import PostgresStore
from .results import (
    UNKNOWN,
    Candidate,
    ClaimVerification,
    EnrolledTemplate,
    EnrollmentReport,
    FaceIdentity,
    Identification,
    Rejection,
    TemplateScore,
)
from .sqlite import MIGRATIONS, SCHEMA_VERSION, SQLiteStore
from .store import (
    AddResult,
    AuditEntry,
    AuditRecord,
    ModelBinding,
    NewTemplate,
    Person,
    PersonExistsError,
    Store,
    Template,
    UnknownPersonError,
    is_database_url,
)

__all__ = [
    "AddResult",
    "AuditEntry",
    "AuditRecord",
    "Candidate",
    "CaptureFrame",
    "ClaimVerification",
    "DEFAULT_FRACTION",
    "APPROX_MIN_TEMPLATES",
    "EnrolledTemplate",
    "EnrollmentReport",
    "ExactIndex",
    "GalleryIndex",
    "FaceIdentity",
    "Gallery",
    "Hit",
    "Identification",
    "InvalidNameError",
    "MIGRATIONS",
    "ModelBinding",
    "PersonExistsError",
    "NewTemplate",
    "Person",
    "QualityGates",
    "RULES",
    "Rejection",
    "PostgresStore",
    "SCHEMA_VERSION",
    "SQLiteStore",
    "Store",
    "Template",
    "TemplateScore",
    "UNKNOWN",
    "UnknownPersonError",
    "assess",
    "calibration_file_for",
    "check_name",
    "gallery_exists",
    "is_database_url",
    "open_store",
    "export_gallery",
    "export_images",
    "import_gallery",
    "import_into",
    "image_files",
    "pose",
    "sharpness",
    "video_frames",
]
