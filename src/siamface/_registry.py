"""One small registry of named factories, shared by the detectors and the encoders.

    DETECTORS = Registry("detector")

    @DETECTORS.register("hog")
    def _hog(**options): ...

    DETECTORS.names()            # sorted
    DETECTORS.create("hog", upsample=1)   # ConfigError naming the valid ones for an unknown name

Registering does not build anything: a factory runs only when `create` is called (no work at import).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories by name for one kind of thing (`kind` is how errors name it: "detector", "model")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@registry.register("name")`` on a factory taking the options as keywords."""

        def wrap(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[name] = factory
            return factory

        return wrap

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def unknown(self, name: str, hint: str = "") -> ConfigError:
        """The error for a name not registered: it lists the valid ones (and `hint`, e.g. "or a path")."""
        return ConfigError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}{hint}")

    def check(self, name: str, **options) -> None:
        """`ConfigError`, before anything is built, for a name not registered or an option its factory does not
        take (it was Python's TypeError, raised on first use: ``Pipeline(min_face=40)`` was built, then failed at
        its first image)."""
        if name not in self._factories:
            raise self.unknown(name)
        try:
            signature = inspect.signature(self._factories[name])
        except (TypeError, ValueError):  # a factory without a signature to read: it says so itself
            return
        try:
            signature.bind(**options)
        except TypeError:
            takes = [
                p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
            unknown = sorted(set(options) - set(takes)) or sorted(options)
            raise ConfigError(
                f"{self.kind} {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"its options: {', '.join(takes) or 'none'}"
            ) from None

    def create(self, name: str, **options) -> T:
        self.check(name, **options)
        return self._factories[name](**options)
