"""Fixtures shared by several unit-test folders."""

from tests.support.fake_fork import fake_fork

__all__ = ["fake_fork"]
