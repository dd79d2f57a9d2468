"""Where things are: the repository, the virtualenv's commands, the test output."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The virtualenv the tests and tools run in: ansible-playbook, molecule, turnomatic.
BIN = Path(sys.executable).parent
ROLES = REPO / "roles"
OUTPUT = REPO / "tests" / "output"
