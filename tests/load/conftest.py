"""Real components on loopback for the load smoke tests (tests/support/processes.py)."""

import shutil

import pytest

from tests.support.processes import Processes


@pytest.fixture
def lo(tmp_path):
    """Start redis-server, turnomatic and nginx on loopback; all stopped when the test ends."""
    with Processes(tmp_path) as processes:
        yield processes


@pytest.fixture
def needs_nginx():
    if not shutil.which("nginx"):
        pytest.skip("nginx is not installed (make setup installs it)")
