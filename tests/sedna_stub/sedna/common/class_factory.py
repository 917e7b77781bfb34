"""Test-only stand-in for ``sedna.common.class_factory`` (a name -> class table, as in Sedna).

Kept separate from :mod:`vlamix.bench.registry` on purpose: a test that registers through this
module and finds the object through ``vlamix.bench`` proves the runner uses Sedna's table when
Sedna is importable.
"""


class ClassType:
    GENERAL = "general"


class ClassFactory:
    __registry__ = {}

    @classmethod
    def register(cls, type_name=ClassType.GENERAL, alias=None):
        def wrapper(t_cls):
            cls.__registry__.setdefault(type_name, {})[alias or t_cls.__name__] = t_cls
            return t_cls

        return wrapper

    @classmethod
    def get_cls(cls, type_name, t_cls_name=None):
        try:
            return cls.__registry__[type_name][t_cls_name]
        except KeyError as err:
            raise ValueError(f"can't find class type {type_name} class name {t_cls_name} in class registry") from err
