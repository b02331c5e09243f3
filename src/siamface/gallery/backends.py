"""Opening a gallery's store from its spec: a ``postgresql://`` URL names a `PostgresStore`, anything else an
SQLite file (`SQLiteStore`). The one module that knows every backend; the backends know only the `Store`
protocol (``store.py``)."""

from __future__ import annotations

import os

from ..errors import GalleryError
from .postgres import PostgresStore
from .sqlite import SQLiteStore
from .store import ModelBinding, Store, is_database_url


def open_store(spec, model: ModelBinding | None = None, *, create: bool = False, keep_images: bool = False) -> Store:
    """The store a gallery spec names: a `PostgresStore` for a ``postgresql://`` URL, else a `SQLiteStore`
    for a file path (read-only when this process may not write the file or its folder). `model`, `create`
    and `keep_images` as the stores take them."""
    if is_database_url(spec):
        return PostgresStore(spec, model, create=create, keep_images=keep_images)
    return SQLiteStore(spec, model, create=create, keep_images=keep_images)


def gallery_exists(spec) -> bool:
    """Whether a gallery is there already (a file, or a database holding the gallery's schema)."""
    if not is_database_url(spec):
        return os.path.exists(spec)
    try:
        open_store(spec).close()
    except GalleryError:
        return False
    return True
