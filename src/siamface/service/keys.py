"""API keys of the service, stored hashed in a keys file beside the gallery (``<gallery>.keys.json``).

A key reads ``sf_<id>_<secret>``: `id` (8 hex digits) names it in listings and logs, `secret` is 32 random
bytes (URL-safe base64). The file keeps, per key, the id, a label, its role, the creation time, a random 16-byte
salt and SHA-256(salt + secret), never the secret itself: the key is shown once, at creation. A plain salted SHA-256 is
enough here because the secret is 256 random bits (nothing to brute-force, unlike a password); it also keeps
the check cheap on every request. Comparison is constant-time.

Roles, least privilege first (`ROLES`; each may do what the ones before it may):

    recognise   verify, identify, liveness sessions (a door, a kiosk, a login: the default of `keys create`)
    enrol       + create a person, add faces that match the person, list and show people
    admin       + forced additions and forced enrolments, rename, metadata, delete

A key written before roles existed (version 1 of the file, no ``role``) is `LEGACY_ROLE` (enrol): an upgrade
keeps an enrolment kiosk working, and takes from every old key what the issue showed them misused (forced
additions, renames, deletions); ``keys list`` and ``serve`` point such keys out. The file is written at
version 2, which an older siamface refuses to read (it would take every key for an admin key).

Writes are atomic (temporary file in the same folder, fsync, rename; mode 0600) and serialised between
processes by an advisory lock, so `siamface keys create` may run while a server is up: the server re-reads
the file whenever it changes, which is also how a revocation takes effect without a restart.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .._files import exclusive_lock, exposure
from ..errors import ConfigError

FORMAT = "siamface-keys"
VERSION = 2
PREFIX = "sf_"
#: The roles, least privileged first: a role may do everything the roles before it may.
ROLES = ("recognise", "enrol", "admin")
DEFAULT_ROLE = "recognise"
#: What a key stored without a role (made before roles existed) may do (see the module's docstring).
LEGACY_ROLE = "enrol"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key of a request (its headers, lower-case names): ``Authorization: Bearer KEY`` or
    ``X-API-Key: KEY``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or None


def check_role(role: str) -> str:
    """`role` when it is one of `ROLES`, else `ConfigError` naming them."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
    return role


def allows(role: str | None, needed: str) -> bool:
    """May a key of `role` do what needs `needed`?"""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def keys_file_for(gallery: str | os.PathLike) -> Path:
    """The keys file that goes with a gallery file: ``<gallery>.keys.json``. A PostgreSQL gallery has no
    place beside it: its keys file is named with ``--keys FILE`` (shared by the servers of that gallery)."""
    from ..errors import ConfigError
    from ..gallery.store import is_database_url

    if is_database_url(gallery):
        raise ConfigError(
            "a PostgreSQL gallery needs --keys FILE: where its API keys are kept (hashed), one "
            "file shared by every server of that gallery"
        )
    return Path(f"{os.fspath(gallery)}.keys.json")


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str
    created: str
    salt: str
    digest: str
    revoked: str | None = None
    stored_role: str | None = None  # None: made before roles existed

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def role(self) -> str:
        """What the key may do (`LEGACY_ROLE` for a key made before roles existed)."""
        return self.stored_role or LEGACY_ROLE

    @property
    def legacy(self) -> bool:
        return self.stored_role is None

    def public(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "legacy": self.legacy,
            "created": self.created,
            "revoked": self.revoked,
        }

    def to_record(self) -> dict:
        record = {"id": self.id, "name": self.name, "created": self.created, "revoked": self.revoked}
        if self.stored_role is not None:
            record["role"] = self.stored_role
        return {**record, "salt": self.salt, "sha256": self.digest}


@dataclass(frozen=True)
class Check:
    """The outcome of checking a presented key: `ok`, else why not (``missing``, ``invalid``, ``revoked``)."""

    ok: bool
    reason: str = ""
    key_id: str | None = None
    role: str | None = None


def _digest(salt_hex: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt_hex) + secret.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_key(presented: str) -> tuple[str, str] | None:
    """(id, secret) of a key written ``sf_<id>_<secret>``, or None when it is not shaped like one."""
    if not presented.startswith(PREFIX):
        return None
    key_id, sep, secret = presented[len(PREFIX) :].partition("_")
    if not sep or len(key_id) != 8 or not secret or len(secret) > 128:
        return None
    try:
        int(key_id, 16)
    except ValueError:
        return None
    return key_id, secret


class KeyStore:
    """The keys of one gallery. Thread-safe; `check` re-reads the file when it changed on disk."""

    def __init__(self, path: str | os.PathLike, *, guarded: bool = False) -> None:
        """`guarded` (a server's): a file other users may change (`exposure`) is refused whenever it is read,
        not only at start: a server re-reads it when it changes."""
        self.path = Path(path)
        self.guarded = guarded
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ApiKey] = {}

    def exposure(self) -> tuple[str | None, str | None]:
        """(why other users may change the keys, why they may read them): `siamface._files.exposure`."""
        return exposure(self.path)

    # -- reading ---------------------------------------------------------------------------------------
    def _load(self) -> dict[str, ApiKey]:
        if not self.path.exists():
            return {}
        writable = exposure(self.path)[0] if self.guarded else None
        if writable:
            raise ConfigError(f"{writable}: no key of it is taken (chmod 600, in a folder only you may write)")
        try:
            payload = json.loads(self.path.read_text(encoding="utf-8"))
            if payload.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            if int(payload.get("version", 0)) > VERSION:
                raise ValueError(f"version {payload.get('version')} is newer than this siamface reads")
            keys = {}
            for r in payload.get("keys", []):
                role = r.get("role")
                if role is not None and role not in ROLES:
                    raise ValueError(f"key {r['id']} has the unknown role {role!r}")
                keys[r["id"]] = ApiKey(
                    r["id"], r.get("name", ""), r["created"], r["salt"], r["sha256"], r.get("revoked"), role
                )
            return keys
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: not a readable keys file ({exc})") from None
        except RecursionError:  # JSON nested deeper than Python's stack
            raise ConfigError(f"{self.path}: not a readable keys file (JSON nested too deeply)") from None

    def _fresh(self) -> dict[str, ApiKey]:
        """The keys, re-read when the file's size or modification time moved."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp or stamp is None:
                self._keys = self._load() if stamp is not None else {}
                self._stamp = stamp
            return self._keys

    def list(self) -> list[ApiKey]:
        return sorted(self._fresh().values(), key=lambda k: (k.created, k.id))

    def count_active(self) -> int:
        return sum(1 for k in self._fresh().values() if k.active)

    def still_active(self, key_id: str) -> bool:
        """Is the key `key_id` (checked once already, with its secret) still there and not revoked?"""
        stored = self._fresh().get(key_id)
        return stored is not None and stored.active

    def check(self, presented: str | None) -> Check:
        """Is `presented` an active key of this store?"""
        if not presented:
            return Check(False, "missing")
        parsed = parse_key(presented.strip())
        if parsed is None:
            return Check(False, "invalid")
        key_id, secret = parsed
        stored = self._fresh().get(key_id)
        if stored is None:
            _digest("00" * 16, secret)  # same work as a real check: no timing hint about which ids exist
            return Check(False, "invalid")
        if not hmac.compare_digest(_digest(stored.salt, secret), stored.digest):
            return Check(False, "invalid")
        if not stored.active:
            return Check(False, "revoked", key_id)
        return Check(True, "", key_id, stored.role)

    # -- writing ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise writers across processes (`siamface._files.exclusive_lock`, a sibling lock file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.path, "the keys file"):
            yield

    def _write(self, keys: dict[str, ApiKey]) -> None:
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "note": "API keys of a siamface service, hashed (SHA-256 with a per-key salt); manage with `siamface keys`",
            "keys": [k.to_record() for k in sorted(keys.values(), key=lambda k: (k.created, k.id))],
        }
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def create(self, name: str = "", role: str = DEFAULT_ROLE) -> tuple[ApiKey, str]:
        """A new key of `role`: (its stored record, the full key to hand to the user, shown only now)."""
        check_role(role)
        name = name.strip()
        if len(name) > 100 or any(unicodedata.category(c).startswith("C") for c in name):
            # C*: controls (C0, C1), format characters (bidi overrides, zero-width), unassigned, private use
            raise ConfigError("a key's name is at most 100 printable characters (no control or format characters)")
        with self._exclusive():
            keys = dict(self._load())
            key_id = secrets.token_hex(4)
            while key_id in keys:
                key_id = secrets.token_hex(4)
            secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
            salt = secrets.token_hex(16)
            record = ApiKey(key_id, name, _now(), salt, _digest(salt, secret), None, role)
            keys[key_id] = record
            self._write(keys)
        return record, f"{PREFIX}{key_id}_{secret}"

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept in the file, so that listings show it). Unknown id: `ConfigError`."""
        key_id = key_id.strip()
        if key_id.startswith(PREFIX):  # a whole key pasted: take its id
            parsed = parse_key(key_id)
            key_id = parsed[0] if parsed else key_id
        with self._exclusive():
            keys = dict(self._load())
            if key_id not in keys:
                raise ConfigError(f"no key with id {key_id!r} (see `siamface keys list`)")
            record = keys[key_id]
            if record.active:
                record = dataclasses.replace(record, revoked=_now())
                keys[key_id] = record
                self._write(keys)
        return record
