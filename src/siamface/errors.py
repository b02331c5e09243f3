"""Every exception siamface raises on purpose.

    SiamfaceError                 base: catch this to catch them all
    ├── ImageError                an input could not be turned into an RGB image (which input, why)
    ├── NoFaceError               an image holds no face where one was needed
    ├── ModelError                a model is unknown, missing or could not be loaded
    │   └── ModelMismatchError    embeddings from different models were compared
    ├── ConfigError               a setting or option has an invalid value
    ├── GalleryError              the gallery store refused an operation
    ├── OverBudgetError           a request's work went past its time budget (see `siamface._budget`)
    └── SourceError               a camera, video file or stream cannot be opened or stopped delivering

Library code raises these and logs; it never prints and never exits.
"""

from __future__ import annotations


class SiamfaceError(Exception):
    """Base class of every siamface error. Each pickles (a worker process's error re-raised in its parent) with
    its message and attributes."""

    def __reduce__(self):
        # Exception pickles as type(self)(*self.args): the errors whose __init__ takes other arguments than the
        # one message (ImageError(source, reason), OverBudgetError, UnknownPersonError, ...) failed to unpickle
        # (a TypeError, or for NoFaceError the message taken for a file name), so a ProcessPoolExecutor
        # worker's ImageError reached its caller as a broken pool. Rebuilt without __init__ instead.
        return _rebuilt, (type(self), self.args, self.__dict__)


class ImageError(SiamfaceError, ValueError):
    """An input could not be decoded or validated as an image."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class NoFaceError(SiamfaceError):
    """No face was found where one was required."""

    def __init__(self, source: str, detector: str = "") -> None:
        self.source = source
        self.detector = detector
        by = f" by detector {detector!r}" if detector else ""
        super().__init__(f"{source}: no face found{by}")


class ModelError(SiamfaceError):
    """A model is unknown, its files are missing, or it failed to load."""


class ModelMismatchError(ModelError):
    """Two embeddings (or an embedding and a gallery) come from different models."""


class ConfigError(SiamfaceError, ValueError):
    """An option or setting has an invalid value."""


class GalleryError(SiamfaceError):
    """The gallery store refused an operation."""


class UnboundGalleryError(GalleryError):
    """The gallery holds no model binding yet (a file just created, by another process or an attempt that
    failed): it is opened with a model to bind it."""


class SourceError(SiamfaceError):
    """A camera, video file, stream or frame folder cannot be opened, or stopped delivering frames."""


class OverBudgetError(SiamfaceError):
    """Work done under a time budget (a request of `siamface serve`) went past its deadline; raised between
    steps, before anything is written, so nothing was decided or changed."""

    def __init__(self, step: str, budget: float) -> None:
        self.step = step
        self.budget = budget
        super().__init__(f"over the {budget:g} s time budget ({step})")


def _rebuilt(cls: type[SiamfaceError], args: tuple, state: dict) -> SiamfaceError:
    """An unpickled `SiamfaceError`: its class, message arguments and attributes, its __init__ not called."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc
