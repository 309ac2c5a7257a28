"""Shared fixtures. Real data lives in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FIREBOX_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data (or $FIREBOX_SHARED_DATA). The real-data tests are part of the
    suite, so a missing folder is a failure that says where it looked, not a skip."""
    if not (SHARED_DATA / "ma" / "towns.geojson").exists():
        pytest.fail(f"real data not found at {SHARED_DATA}; set FIREBOX_SHARED_DATA")
    return SHARED_DATA
