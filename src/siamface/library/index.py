"""An archive's faces and embeddings, computed with Ray Data and written idempotently (`siamface index`).

    paths = archive_paths(["photos/"], list_file=None)       # folders walked, or a file of paths
    sink = open_index("index/")                              # Parquet parts, or a postgresql:// URL (pgvector)
    stats = run_index(paths, sink, options)                  # local Ray; address="ray://..." for a cluster

Every image is one row per face (``face`` 0, 1, ... biggest first) keyed by (``path``, ``face``), with the
sha256 of its bytes (``image_sha256``: the same photo under two names is found by it), the box, detection
score, embedding and the model; an image without a face is one row with ``face`` -1, an unreadable one -2
with its ``error``, so that every image given is in the index exactly once, faces or not.

Resuming: the images already in the index are skipped (a re-run after a crash, a killed worker or a grown
folder embeds only the rest). Ray restarts an embedding actor (one per CPU, each loading the chain once) lost
with its worker or node, and runs its blocks again; the driver writes each block of
results once it is complete, atomically (a Parquet part written aside and renamed, named by the hash of its
paths; rows inserted in one transaction with ``ON CONFLICT DO NOTHING``), so a crash leaves no half block
and a block written twice adds no row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_file, exposure
from ..errors import ConfigError, GalleryError, ModelMismatchError, SiamfaceError

log = logging.getLogger(__name__)

NO_FACE, UNREADABLE = -1, -2
#: Images per block of work (one task, one Parquet part, one transaction).
BATCH = 16
#: The table of a PostgreSQL index (beside the gallery's own tables, in the same database).
TABLE = "siamface_index"
_META = "_siamface_index.json"


@dataclass
class IndexStats:
    images: int  # images given
    skipped: int  # already in the index
    done: int  # indexed by this run
    faces: int  # faces found by this run
    seconds: float

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.seconds if self.seconds > 0 else 0.0

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def archive_paths(sources: Iterable[str | os.PathLike], list_file: str | os.PathLike | None = None) -> list[str]:
    """The images of `sources` (files as given, folders walked) and of `list_file` (one path a line; blank lines
    and lines starting with # skipped), each once, in order."""
    from ..datasets import files_under

    paths = files_under(list(sources), what="photo") if sources else []
    if list_file is not None:
        try:
            lines = Path(list_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the list of paths {list_file}: {exc}") from None
        paths += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return list(dict.fromkeys(str(p) for p in paths))


# -- the work of one block ---------------------------------------------------------------------------------
_pipelines: dict[tuple, Any] = {}


def _pipeline(options: dict[str, Any]):
    """The chain of `options` (detector, model, min_face, upsample, refine_keypoints, device), built once per
    worker process."""
    key = tuple(sorted(options.items()))
    if key not in _pipelines:
        from types import SimpleNamespace

        from ..factory import build_pipeline

        _pipelines[key] = build_pipeline(SimpleNamespace(threshold=None, **options))[0]
    return _pipelines[key]


def embed_block(paths: list[str], options: dict[str, Any]) -> dict[str, list]:
    """The rows (columns as lists) of the images `paths`: every face detected, the faces of all of them
    embedded together (`Pipeline.embed_many`, in batches)."""
    from ..image import load_image, read_image_file

    pipeline = _pipeline(options)
    model = pipeline.encoder.info.name
    rows: dict[str, list] = {k: [] for k in ("path", "face", "image_sha256", "box", "score", "embedding", "error")}
    found = []
    for path in paths:
        data = None
        try:
            data = read_image_file(path)  # a regular file only, and not past the size an image may have
            image = load_image(data, name=path)
        except SiamfaceError as exc:
            digest = hashlib.sha256(data).hexdigest() if data is not None else ""
            _row(rows, path, UNREADABLE, digest, error=str(exc) or type(exc).__name__)
            continue
        found.append((path, hashlib.sha256(data).hexdigest(), image, pipeline.detect(image)))
    embedded = pipeline.embed_many([(image, faces) for _, _, image, faces in found])
    for (path, digest, _, _), faces in zip(found, embedded):
        if not len(faces):
            _row(rows, path, NO_FACE, digest)
        for i in range(len(faces)):
            box = [float(v) for v in faces.boxes[i]]
            _row(rows, path, i, digest, box, float(faces.scores[i]), faces.embeddings[i].astype(np.float32))
    rows["model"] = [model] * len(rows["path"])
    return rows


def _row(rows, path, face, digest, box=None, score=None, embedding=None, error=None) -> None:
    for name, value in zip(rows, (path, face, digest, box, score, embedding, error)):
        rows[name].append(value)


class _RayEmbedder:
    """Ray Data's map_batches callable, one per actor: the chain is loaded once, then each block of paths in
    gives its rows out as an Arrow table."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        _pipeline(options)

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        rows = embed_block([str(p) for p in batch["path"]], self.options)
        return pa.table(_arrow_columns(rows))


def _arrow_columns(rows: dict[str, list]) -> dict[str, Any]:
    import pyarrow as pa

    return {
        "path": pa.array(rows["path"], pa.string()),
        "face": pa.array(rows["face"], pa.int32()),
        "image_sha256": pa.array(rows["image_sha256"], pa.string()),
        "box": pa.array(rows["box"], pa.list_(pa.float32())),
        "score": pa.array(rows["score"], pa.float32()),
        "embedding": pa.array([None if e is None else e.tolist() for e in rows["embedding"]], pa.list_(pa.float32())),
        "error": pa.array(rows["error"], pa.string()),
        "model": pa.array(rows["model"], pa.string()),
    }


# -- where the rows go --------------------------------------------------------------------------------------
class ParquetIndex:
    """A folder of Parquet parts, one per block, each written aside and renamed into place (never half a
    part), named by the hash of its paths (the same block written twice is one part)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.location = str(self.folder)

    def done(self) -> set[str]:
        if not self.folder.is_dir():
            return set()
        import pyarrow.parquet as pq

        out: set[str] = set()
        for part in sorted(self.folder.glob("part-*.parquet")):
            out.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        return out

    def bind(self, model: str) -> None:
        """Refuse to mix models: an index holds the embeddings of one model (as a gallery does). Refuse, before
        any work, a folder that another user owns or may change (`siamface._files.exposure`): `read_index`
        refuses its parts (they say which faces the photos hold), and a link planted there had the model's
        name written through it, to wherever it pointed."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        writable, _ = exposure(self.folder)
        if writable:
            raise ConfigError(
                f"{writable}: an index there could be changed by others (and would not be read: cluster --index "
                "and find --index refuse it); give --out a folder of your own (chmod 700)"
            )
        meta = self.folder / _META
        if meta.exists():
            bound = json.loads(meta.read_text()).get("model")
            if bound != model:
                raise ModelMismatchError(f"the index {self.folder} holds embeddings of {bound!r}, not {model!r}")
            return
        with atomic_file(meta, mode=0o600) as f:  # a new file, renamed into place: never through a link
            f.write((json.dumps({"model": model, "format": 1}) + "\n").encode())

    def write(self, table) -> None:
        import pyarrow.parquet as pq

        paths = sorted(set(table.column("path").to_pylist()))
        name = "part-" + hashlib.sha256("\n".join(paths).encode()).hexdigest()[:24] + ".parquet"
        final = self.folder / name
        if final.exists():
            return
        with atomic_file(final) as f:  # written aside under a random name (never through a link), then renamed
            pq.write_table(table, f)

    def close(self) -> None:
        for stale in self.folder.glob(".part-*.tmp"):  # a crashed run's unfinished parts
            stale.unlink(missing_ok=True)


class PostgresIndex:
    """The table `TABLE` in a PostgreSQL database with pgvector (the gallery's database): rows keyed by
    (path, face), each block inserted in one transaction, rows already there left as they are."""

    def __init__(self, url: str) -> None:
        from ..gallery.postgres import redact

        try:
            import psycopg
            from pgvector.psycopg import register_vector
        except ImportError:
            raise ConfigError("a PostgreSQL index needs the postgres extra: pip install 'siamface[postgres]'") from None
        self.location = redact(url)
        try:
            self.conn = psycopg.connect(url, autocommit=True)
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(self.conn)
        except psycopg.Error as exc:
            raise GalleryError(f"cannot open the index in {self.location}: {exc}") from None
        self.dim: int | None = None

    def done(self) -> set[str]:
        exists = self.conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0]
        if exists is None:
            return set()
        return {row[0] for row in self.conn.execute(f"SELECT DISTINCT path FROM {TABLE}")}

    def bind(self, model: str, dim: int | None = None) -> None:
        self.model, self.dim = model, dim
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (path text NOT NULL, face integer NOT NULL, image_sha256 text, "
            f"box real[], score real, embedding vector, error text, model text NOT NULL, PRIMARY KEY (path, face))"
        )
        other = self.conn.execute(f"SELECT model FROM {TABLE} WHERE model <> %s LIMIT 1", (model,)).fetchone()
        if other is not None:
            raise ModelMismatchError(f"the index in {self.location} holds embeddings of {other[0]!r}, not {model!r}")

    def write(self, table) -> None:
        cols = table.to_pydict()
        rows = [
            (
                cols["path"][i],
                cols["face"][i],
                cols["image_sha256"][i],
                cols["box"][i],
                cols["score"][i],
                None if cols["embedding"][i] is None else np.asarray(cols["embedding"][i], np.float32),
                cols["error"][i],
                cols["model"][i],
            )
            for i in range(table.num_rows)
        ]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {TABLE} (path, face, image_sha256, box, score, embedding, error, model) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (path, face) DO NOTHING",
                rows,
            )

    def close(self) -> None:
        self.conn.close()


def open_index(spec: str | os.PathLike):
    """A `PostgresIndex` for a postgresql:// URL, else a `ParquetIndex` folder."""
    from ..gallery.store import is_database_url

    return PostgresIndex(str(spec)) if is_database_url(spec) else ParquetIndex(spec)


def read_index(folder: str | os.PathLike) -> dict[str, Any]:
    """The faces of a Parquet index (refused, `ConfigError`, when other users may change a part of it:
    `siamface._files.exposure`): ``paths`` (n,), ``faces`` (n,), ``boxes`` (n, 4), ``embeddings`` (n, d)
    float32, ``digests`` (the sha256 of each face's image) and ``model``; each (path, face) once, images without a face left out;
    and ``images``: every image the index holds, faces or not, with the error that made it unreadable (None: read)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise ConfigError(f"{folder} is not an index made by siamface index (no part-*.parquet inside)")
    for part in parts:  # its rows say which faces the photos hold: nobody else may have written them
        writable, _ = exposure(part)
        if writable:
            raise ConfigError(
                f"{writable}: an index that others may change says which faces the photos hold; make its folder "
                "and parts yours alone (chmod 700 / 600), or index again"
            )
    seen, paths, faces, boxes, vectors, digests, models = set(), [], [], [], [], [], set()
    images: dict[str, str | None] = {}
    for part in parts:
        t = pq.read_table(part).to_pydict()
        for i, (path, face) in enumerate(zip(t["path"], t["face"])):
            if face == UNREADABLE:
                images.setdefault(path, t["error"][i] or "unreadable")
            else:
                images[path] = None
            if face < 0 or (path, face) in seen:
                continue
            seen.add((path, face))
            paths.append(path)
            faces.append(face)
            boxes.append(t["box"][i])
            vectors.append(t["embedding"][i])
            digests.append(t["image_sha256"][i] or "")
            models.add(t["model"][i])
    if len(models) > 1:
        raise ModelMismatchError(f"{folder} mixes embeddings of several models: {', '.join(sorted(models))}")
    return {
        "paths": paths,
        "faces": np.asarray(faces, np.int32),
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "embeddings": np.asarray(vectors, np.float32).reshape(len(paths), -1),
        "digests": digests,
        "model": next(iter(models), None),
        "images": images,
    }


def _retried() -> dict[str, Any]:
    """An actor lost with its worker or node is started again elsewhere, and its blocks run again there."""
    return {"max_restarts": -1, "max_task_retries": -1}


# -- the run ----------------------------------------------------------------------------------------------
def run_index(
    paths: list[str],
    sink,
    options: dict[str, Any],
    *,
    address: str | None = None,
    workers: int | None = None,
    batch: int = BATCH,
    object_store_mb: int = 200,
    progress: Callable[[int, int, int], None] | None = None,
) -> IndexStats:
    """Index `paths` into `sink` (see `open_index`) with Ray Data: on the cluster at `address`, else on a
    local Ray started for this run with `workers` CPUs (default: all) and a small object store. `options`:
    the chain (detector, model, min_face, upsample, device). `progress(done, total, faces)` after each block
    written. Raises ConfigError when Ray is missing (the cluster extra)."""
    try:
        import pyarrow  # noqa: F401
        import ray
    except ImportError:
        raise ConfigError("siamface index needs the cluster extra: pip install 'siamface[cluster]'") from None
    if batch < 1:
        raise ConfigError(f"the batch must hold at least one image, got {batch}")
    model = _pipeline(options).encoder.info.name  # a bad model or device stops here, before Ray starts
    sink.bind(model)
    already = sink.done()
    todo = [p for p in paths if p not in already]
    start = time.monotonic()
    done = faces = 0
    if todo:
        started_here = not ray.is_initialized()
        if started_here:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(
                    num_cpus=workers,
                    include_dashboard=False,
                    object_store_memory=object_store_mb * 1024 * 1024,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
        try:
            import ray.data

            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=max(1, len(todo) // batch))
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            ds = ds.map_batches(
                _RayEmbedder,
                fn_constructor_kwargs={"options": options},
                batch_size=batch,
                batch_format="numpy",
                num_cpus=1,
                compute=ray.data.ActorPoolStrategy(
                    min_size=1, max_size=cpus
                ),  # one actor per CPU, fewer when a node is lost
                ray_remote_args_fn=_retried,
            )
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                sink.write(table)
                block_paths = set(table.column("path").to_pylist())
                done += len(block_paths)
                faces += sum(1 for f in table.column("face").to_pylist() if f >= 0)
                if progress is not None:
                    progress(done, len(todo), faces)
        finally:
            if started_here:
                ray.shutdown()
    sink.close()
    return IndexStats(len(paths), len(paths) - len(todo), done, faces, time.monotonic() - start)


def indexed_faces(folder: str | os.PathLike, under: Iterable[str | os.PathLike], model: str):
    """The faces of the photos and videos `under` names (folders walked, as a scan walks them: `media_files`) read
    from a Parquet index, as a photo library's `Collected` (for `cluster` and `find`, instead of embedding them
    again). A file the index does not hold (added since it was made, or a video: an index holds photos) or holds
    as unreadable is one of its errors, never passed over: `find` must not answer "not found" of a person in
    files it did not look at. Raises ModelMismatchError when the index holds another model's embeddings than
    `model`."""
    from .media import FOLDER_LINK, Collected, LibraryFace, folder_link, media_files

    index = read_index(folder)
    if index["model"] is not None and index["model"] != model:
        raise ModelMismatchError(
            f"the index {folder} holds embeddings of {index['model']!r}, not {model!r} (give --model {index['model']})"
        )
    held = {os.path.abspath(path): error for path, error in index["images"].items()}
    rows: dict[str, list[int]] = {}
    for k, path in enumerate(index["paths"]):
        rows.setdefault(os.path.abspath(path), []).append(k)
    files = media_files(under)
    faces, errors = [], []
    for file in files:
        full = os.path.abspath(file)
        if folder_link(file):
            errors.append((file, FOLDER_LINK))
        elif full not in held:
            errors.append(
                (file, f"not in the index {folder} (added since it was made, or a video): not read; index it again")
            )
        elif held[full] is not None:
            errors.append((file, f"unreadable when it was indexed: {held[full]}"))
        else:
            faces += [
                LibraryFace(
                    file, tuple(float(v) for v in index["boxes"][k]), None, index["embeddings"][k], index["digests"][k]
                )
                for k in rows.get(full, [])
            ]
    return Collected(faces, errors, embedded=0, cached=len(files) - len(errors), files=len(files))
