"""Shared pytest configuration.

Markers:
    libero: needs the LIBERO simulator (MuJoCo EGL rendering); slow.
    ianvs: needs a real Ianvs install; skipped when ``core`` (Ianvs) is not importable.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference", "openvla")


def pytest_configure(config):
    config.addinivalue_line("markers", "libero: needs the LIBERO simulator (slow)")
    config.addinivalue_line("markers", "ianvs: needs a real Ianvs install")


@pytest.fixture(scope="session")
def reference_dir():
    """``../shared/reference/openvla`` beside the checkout; tests that need it skip when absent."""
    path = os.path.abspath(REFERENCE_DIR)
    if not os.path.isdir(path):
        pytest.skip("reference fixtures ../shared/reference/openvla not present")
    return path
