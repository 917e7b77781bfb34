"""Named registries: classes found by name, with a "did you mean" error (LeRobot's ``register_subclass``).

Usage::

    STRATEGIES = Registry("strategy")

    @STRATEGIES.register("doremi")
    class DoReMi(Strategy): ...

    STRATEGIES.get("doremii")   # ConfigError: config field 'strategy': unknown 'doremii'; did you mean 'doremi'? allowed: ...
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from vlamix.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, in registration order.

    Args:
        field: the configuration field whose values are the names (named in errors).
    """

    def __init__(self, field: str):
        self.field = field
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        Raises:
            ValueError: ``name`` is already registered (two modules would claim one name).
        """

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.field} {name!r} is registered twice ({self._items[name]!r} and {obj!r})")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered under ``name``.

        Raises:
            ConfigError: unknown name, with the closest registered names and the allowed ones.
        """
        try:
            return self._items[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), list(self._items), n=2)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(self.field, f"unknown {name!r}{hint} allowed: {', '.join(self._items)}") from None

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
