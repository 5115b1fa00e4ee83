import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEFORUM_SHARED", REPO.parent / "shared"))
CONFORMANCE = SHARED / "conformance"


@pytest.fixture(scope="session")
def conformance() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.fail(f"conformance data not found at {CONFORMANCE} (set DEFORUM_SHARED)")
    return CONFORMANCE


# Tiny models gain nothing from threads, and OpenMP barriers crawl on busy shared cores (10-100x measured):
# one torch thread in the tests and in the renders they start (the variable reaches snakemake subprocesses).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
