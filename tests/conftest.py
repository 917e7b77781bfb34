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
    """``../shared/reference/openvla`` beside the checkout (or ``$VLAMIX_REFERENCE_DIR``).

    Tests that need it skip when it is absent, except under CI (``CI=true``), where it must exist.
    """
    path = os.path.abspath(os.environ.get("VLAMIX_REFERENCE_DIR", REFERENCE_DIR))
    if not os.path.isdir(path):
        message = f"reference fixtures not found at {path} (set VLAMIX_REFERENCE_DIR)"
        if os.environ.get("CI") == "true":  # CI always has shared/ beside the clone: never skip silently there
            pytest.fail(message)
        pytest.skip(message)
    return path
