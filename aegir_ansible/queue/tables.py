"""Queue bookkeeping tables (owned by the queue runner)."""

from __future__ import annotations
