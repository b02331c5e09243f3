"""The HTTP service: a FastAPI app over one gallery, with API keys, limits and a web page.

    siamface keys create --gallery people.db       # prints a key, once
    siamface serve --gallery people.db             # http://127.0.0.1:8000 (page), /docs (OpenAPI)

Needs the ``service`` extra (``pip install 'siamface[service]'``: FastAPI, uvicorn, python-multipart).
`keys`, `lockout` and `settings` import without it; `create_app` imports FastAPI when called.
"""

from __future__ import annotations

from .keys import ApiKey, KeyStore, keys_file_for
from .lockout import LockedOut, Lockout
from .settings import Settings

__all__ = ["ApiKey", "KeyStore", "LockedOut", "Lockout", "Settings", "create_app", "keys_file_for"]


def create_app(settings: Settings, service=None):
    """The FastAPI application (see ``siamface.service.app.create_app``)."""
    from .app import create_app as _create_app

    return _create_app(settings, service)
