"""The autoscaler's loopback suite (no VM): tools/autoscale importable as
tools.autoscale from the repository root, as `make autoscale` runs it."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
