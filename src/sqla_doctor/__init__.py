"""sqla-doctor: catches SQLAlchemy's production pitfalls before production does.

``import sqla_doctor`` stays cheap: the runtime (which imports SQLAlchemy) loads on first
use of one of its names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sqla_doctor.findings import Finding, Location, Severity
    from sqla_doctor.runtime import (
        LoadingWarning,
        NPlusOneWarning,
        PitfallError,
        QueryWarning,
        SessionWarning,
        SqlaDoctorError,
        SqlaDoctorWarning,
        Tracker,
        UnitOfWork,
        collected,
        current_unit,
        install,
        track,
        uninstall,
    )

__all__ = [
    "Finding",
    "LoadingWarning",
    "Location",
    "NPlusOneWarning",
    "PitfallError",
    "QueryWarning",
    "SessionWarning",
    "Severity",
    "SqlaDoctorError",
    "SqlaDoctorWarning",
    "Tracker",
    "UnitOfWork",
    "__version__",
    "collected",
    "current_unit",
    "install",
    "track",
    "uninstall",
]

_WHERE = {
    "Finding": "sqla_doctor.findings",
    "Location": "sqla_doctor.findings",
    "Severity": "sqla_doctor.findings",
    **dict.fromkeys(
        (
            "LoadingWarning",
            "NPlusOneWarning",
            "PitfallError",
            "QueryWarning",
            "SessionWarning",
            "SqlaDoctorError",
            "SqlaDoctorWarning",
            "Tracker",
            "UnitOfWork",
            "collected",
            "current_unit",
            "install",
            "track",
            "uninstall",
        ),
        "sqla_doctor.runtime",
    ),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sqla_doctor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
