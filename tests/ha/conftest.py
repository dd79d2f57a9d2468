"""Fixtures of the high-availability suite: the lab fleet's Redis nodes and sentinels."""

import pytest

from tests.support.redis_fleet import RedisFleet


@pytest.fixture(scope="module")
def redis_fleet(fleet):
    return RedisFleet(fleet)
