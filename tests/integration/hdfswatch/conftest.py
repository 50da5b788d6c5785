"""Fixtures for hdfswatch against real NameNodes.

`stack` (tests/conftest.py) is the shared dev stack: never restarted or put in safe mode here.
`private_hdfs` (tests/integration/conftest.py) is the HDFS that tests may restart or purge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hdfswatch_support import Namespace

from hdfswatch.namenode import NameNodeClient


@pytest.fixture
async def nn(stack) -> AsyncIterator[NameNodeClient]:  # type: ignore[no-untyped-def]
    """A NameNode client of the shared dev stack, as its superuser."""
    async with NameNodeClient([stack.namenode], stack.hdfs_user, retry_for=30) as client:
        yield client


@pytest.fixture
def ns(nn: NameNodeClient) -> Namespace:
    return Namespace(nn)
