import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEFORUM_SHARED", REPO.parent / "shared"))
CONFORMANCE = SHARED / "conformance"


@pytest.fixture(scope="session")
def conformance() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.fail(f"conformance data not found at {CONFORMANCE} (set DEFORUM_SHARED)")
    return CONFORMANCE
