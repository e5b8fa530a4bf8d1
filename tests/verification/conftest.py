"""Fixtures for tiered verification: scans and extra graders."""
from __future__ import annotations

import pytest

from cases.roles import Role
from tests.factories import ScanFactory


@pytest.fixture
def scan(db):
    return ScanFactory()


@pytest.fixture
def grader_t2c(user_factory):
    return user_factory("grader2c", Role.GRADER_T2)


@pytest.fixture
def grader_t1b(user_factory):
    return user_factory("grader1b", Role.GRADER_T1)


@pytest.fixture
def grader_t3b(user_factory):
    return user_factory("grader3b", Role.GRADER_T3)
