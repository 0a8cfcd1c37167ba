"""sqla-doctor: catches SQLAlchemy's production pitfalls before production does."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
