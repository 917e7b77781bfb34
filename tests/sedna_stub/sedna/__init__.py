"""Test-only stand-in for the ``sedna`` package: just ``sedna.common.class_factory``.

Put ``tests/sedna_stub`` first on ``sys.path`` to make ``import sedna`` find it.
"""
