"""Data layer: Aegir's frontend tables, the backend's own tables, engines and schema."""

from .engine import make_engine, make_sessionmaker, resolve_url, safe_url
from .schema import init_schema

__all__ = ["make_engine", "make_sessionmaker", "resolve_url", "safe_url", "init_schema"]
