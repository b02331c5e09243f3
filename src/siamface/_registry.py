"""One small registry of named factories, shared by the detectors and the encoders.

    DETECTORS = Registry("detector")

    @DETECTORS.register("hog")
    def _hog(**options): ...

    DETECTORS.names()            # sorted
    DETECTORS.create("hog", upsample=1)   # ConfigError naming the valid ones for an unknown name

Registering does not build anything: a factory runs only when `create` is called (no work at import).
"""

from __future__ import annotations

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

    def create(self, name: str, **options) -> T:
        if name not in self._factories:
            raise self.unknown(name)
        return self._factories[name](**options)
