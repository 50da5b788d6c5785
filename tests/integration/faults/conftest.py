"""The fault suite reuses the daemon tests' helpers (tests/integration/pipeline/harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# Test directories are not packages here (pytest's rootdir-relative imports), so the sibling
# directory that holds `harness` goes on the path the way pytest puts each test's own there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))
