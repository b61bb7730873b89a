"""Fixtures shared with the annotation and audit tests."""

from tests.annotation.conftest import make_client  # noqa: F401
from tests.test_audit import audited  # noqa: F401
