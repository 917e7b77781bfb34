"""Import shims for the CPU-only PyPI stack.

The only torchvision build that pairs with torch 2.13 on PyPI is a CUDA build. With the CPU torch,
``import torchvision`` fails in ``torchvision._meta_registrations`` ("operator torchvision::nms does
not exist") and takes ``import timm`` and ``import peft``/``transformers`` vision code with it. No
torchvision operator is used by vlamix; timm only imports torchvision for data transforms.

:func:`import_timm` first tries a plain import. Only when that fails with this exact error does it
register empty stand-ins for the two modules that register torchvision's C++ operators, and import
again. On a machine with a matching torchvision (any CUDA install) nothing is patched.
"""

from __future__ import annotations

import logging
import sys
import types

logger = logging.getLogger(__name__)

_OP_MODULES = ("torchvision._meta_registrations", "torchvision._autograd_registrations")
_patched = False


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work on the CPU torch; return True if a shim had to be installed.

    Raises:
        ImportError / RuntimeError: any failure other than the known operator-registration one.
    """
    global _patched
    if _patched:
        return True
    try:
        import torchvision  # noqa: F401  (the import being tested: it may fail, and is retried with the shim)

        return False
    except ModuleNotFoundError:
        return False  # timm will report the missing package itself
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        for name in _OP_MODULES:
            sys.modules[name] = types.ModuleType(name)
        import torchvision  # noqa: F401  (again, now with the shim in place)

        _patched = True
        logger.debug("torchvision C++ operators unavailable (CPU torch + CUDA torchvision); registered no-op stand-ins")
        return True


def import_timm():
    """Return the ``timm`` module, installing the torchvision shim first when it is needed."""
    ensure_torchvision_importable()
    import timm  # only after the torchvision shim above (timm imports torchvision)

    return timm
