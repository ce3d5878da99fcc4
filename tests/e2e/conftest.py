"""Everything under tests/e2e/ runs against the real-server harness: marked `e2e`, so that
`-m "not e2e"` leaves exactly the unit and integration levels."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
