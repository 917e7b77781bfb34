"""A minimal class registry with the interface of ``sedna.common.class_factory``.

Ianvs finds an example's basemodel and metric functions by name: each file registers its object with
``@ClassFactory.register(ClassType.GENERAL, alias="...")`` and Ianvs calls
``ClassFactory.get_cls(type_name=ClassType.GENERAL, t_cls_name=alias)`` after importing the file.
Sedna's ``ClassFactory`` (kubeedge/sedna ``lib/sedna/common/class_factory.py``) is nothing more than
that name -> object table. This module is an independent implementation of the same table so that
the example's files load with :mod:`vlamix.bench.job` on machines without Sedna::

    try:
        from sedna.common.class_factory import ClassFactory, ClassType
    except ImportError:  # vlamix.bench without Sedna
        from vlamix.bench.registry import ClassFactory, ClassType

:func:`get_class_factory` makes the same choice for the job runner, so the file and the runner
always use one table.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

logger = logging.getLogger(__name__)


class ClassType:
    """Registry groups (the names Sedna uses; Ianvs uses ``GENERAL`` for basemodels and metrics)."""

    GENERAL = "general"
    HEM = "hard_example_mining"
    FL_AGG = "aggregation"
    MTL = "multi_task_learening"  # sic: Sedna's spelling, kept so the group names match
    UTD = "unseen_task_detect"
    ALGORITHM = "algorithm"
    DATASET = "data_process"
    CALLBACK = "post_process_callback"


class ClassFactory:
    """Process-wide table ``type_name -> {alias: class or function}``.

    Registering an alias again replaces the earlier object (Sedna's duplicate check never fires, so
    it behaves the same); the replacement is logged at debug level.
    """

    __registry__: dict[str, dict[str, Any]] = {}

    @classmethod
    def register(cls, type_name: str = ClassType.GENERAL, alias: str | None = None) -> Callable[[Any], Any]:
        """Decorator: register the decorated class or function under ``alias`` (default: its ``__name__``)."""

        def wrapper(t_cls: Any) -> Any:
            return cls.register_cls(t_cls, type_name=type_name, alias=alias)

        return wrapper

    @classmethod
    def register_cls(cls, t_cls: Any, type_name: str = ClassType.GENERAL, alias: str | None = None) -> Any:
        """Register ``t_cls`` under ``alias`` in group ``type_name`` and return it unchanged."""
        name = alias if alias is not None else t_cls.__name__
        group = cls.__registry__.setdefault(type_name, {})
        if name in group and group[name] is not t_cls:
            logger.debug("registry %s: alias %r re-registered by %s", type_name, name, getattr(t_cls, "__module__", "?"))
        group[name] = t_cls
        return t_cls

    @classmethod
    def is_exists(cls, type_name: str, cls_name: str | None = None) -> bool:
        """True if group ``type_name`` exists (and holds ``cls_name`` when given)."""
        if cls_name is None:
            return type_name in cls.__registry__
        return cls_name in cls.__registry__.get(type_name, {})

    @classmethod
    def get_cls(cls, type_name: str, t_cls_name: str | None = None) -> Any:
        """Return the object registered as ``t_cls_name`` in group ``type_name``.

        Raises:
            ValueError: nothing is registered under that name (the message lists what is).
        """
        if t_cls_name is None or not cls.is_exists(type_name, t_cls_name):
            known = ", ".join(sorted(cls.__registry__.get(type_name, {}))) or "nothing"
            raise ValueError(f"can't find class type {type_name} class name {t_cls_name} in class registry; registered: {known}")
        return cls.__registry__[type_name][t_cls_name]


def get_class_factory() -> tuple[Any, Any]:
    """Return ``(ClassFactory, ClassType)``: Sedna's when ``sedna`` is importable, else this module's."""
    try:
        from sedna.common.class_factory import ClassFactory as SednaClassFactory  # optional: only under Ianvs
        from sedna.common.class_factory import ClassType as SednaClassType  # optional: only under Ianvs
    except ImportError:
        return ClassFactory, ClassType
    return SednaClassFactory, SednaClassType
