"""MuJoCo EGL device selection when ``CUDA_VISIBLE_DEVICES`` is narrowed (Ray trials, Slurm, torchrun).

A process that sees only some GPUs (Ray sets ``CUDA_VISIBLE_DEVICES`` of a trial to the GPUs it was
given, e.g. ``"3"``) gets from NVIDIA's EGL only those devices, renumbered from 0. robosuite 1.4
then picks the wrong device twice:

* ``robosuite/renderers/context/egl_context.py`` uses ``MUJOCO_EGL_DEVICE_ID``, or else the value of
  ``CUDA_VISIBLE_DEVICES`` ("3"), as an index into the visible EGL devices: index 3 of one device
  raises "must be an integer between 0 and 0". So inside a trial ``MUJOCO_EGL_DEVICE_ID`` must be 0.
* ``robosuite/utils/binding_utils.py`` asserts at import time that ``MUJOCO_EGL_DEVICE_ID`` occurs in
  ``CUDA_VISIBLE_DEVICES`` (as a substring), which ``"0"`` and ``"3"`` do not.

:func:`use_first_visible_egl_device` sets ``MUJOCO_EGL_DEVICE_ID=0`` and installs an import hook that
hides the variable only while ``robosuite.utils.binding_utils`` executes, so the import-time check
passes and the context is created on the trial's GPU. Processes started with ``spawn`` inherit the
variable and install the hook themselves (importing :mod:`vlamix.sim` does it, see
:func:`install_robosuite_import_guard`). Known reports: starVLA/starVLA#390 (set
``MUJOCO_EGL_DEVICE_ID=0``), GuanxingLu/vlarl#16 (the assertion), RLinf/RLinf#1458 (the import hook).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys

logger = logging.getLogger(__name__)

GUARDED_MODULE = "robosuite.utils.binding_utils"


def egl_check_would_fail(environ=os.environ) -> bool:
    """True when robosuite's import-time assertion would reject ``MUJOCO_EGL_DEVICE_ID``."""
    cvd = environ.get("CUDA_VISIBLE_DEVICES", "")
    dev = environ.get("MUJOCO_EGL_DEVICE_ID")
    return cvd != "" and dev is not None and not (dev.isdigit() and dev in cvd)


class _HideEglDeviceDuringImport(importlib.abc.MetaPathFinder):
    """Meta-path finder: run ``robosuite.utils.binding_utils`` with ``MUJOCO_EGL_DEVICE_ID`` unset."""

    def find_spec(self, fullname, path, target=None):
        if fullname != GUARDED_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def guarded_exec(module):
            saved = os.environ.pop("MUJOCO_EGL_DEVICE_ID", None)
            try:
                exec_module(module)
            finally:
                if saved is not None:
                    os.environ["MUJOCO_EGL_DEVICE_ID"] = saved

        spec.loader.exec_module = guarded_exec
        return spec


def install_robosuite_import_guard() -> bool:
    """Install the import hook when robosuite's check would fail and robosuite is not imported yet.

    Returns True when the hook is (already) installed. Cheap: imports nothing.
    """
    if any(isinstance(f, _HideEglDeviceDuringImport) for f in sys.meta_path):
        return True
    if not egl_check_would_fail() or GUARDED_MODULE in sys.modules:
        return False
    sys.meta_path.insert(0, _HideEglDeviceDuringImport())
    return True


def use_first_visible_egl_device() -> str | None:
    """In a process whose ``CUDA_VISIBLE_DEVICES`` names its GPUs, render on the first of them.

    Sets ``MUJOCO_EGL_DEVICE_ID=0`` (EGL numbers the visible devices from 0) and installs the import
    guard. Does nothing without ``CUDA_VISIBLE_DEVICES`` or with it empty (CPU trial: Mesa renders).
    Returns the value set, or None.
    """
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if cvd == "":
        return None
    previous = os.environ.get("MUJOCO_EGL_DEVICE_ID")
    if previous not in (None, "0"):
        logger.info("MUJOCO_EGL_DEVICE_ID=%s replaced by 0: CUDA_VISIBLE_DEVICES=%s renumbers the EGL devices", previous, cvd)
    os.environ["MUJOCO_EGL_DEVICE_ID"] = "0"
    install_robosuite_import_guard()
    return "0"
