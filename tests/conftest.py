"""Shared fixtures. Real data live in ../shared/data beside the repository (CI has them there too)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real Sentinel data of ../shared/data; fails (never skips) when it is missing."""
    if not (SHARED_DATA / "sen12mscr").is_dir():
        pytest.fail(
            f"real test data not found at {SHARED_DATA}: these tests need ../shared/data beside the repository "
            "(the project's shared data folder); it is never copied into the repository",
            pytrace=False,
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def sen12mscr_root(shared_data: Path) -> Path:
    return shared_data / "sen12mscr"
