"""Where people already work: the pytest plugin, ASGI and WSGI middleware, logging, OpenTelemetry.

Each integration is one module and a thin wrapper over the runtime's ``track()``: it
decides where a unit of work begins and ends (a test, a request) and where its findings
go (a test failure, a log record, a span event). Their dependencies are optional extras;
importing an integration whose extra is missing raises :class:`MissingDependency`, which
names the extra to install.

Importing this package costs nothing: it does not import SQLAlchemy or the runtime.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from sqla_doctor.runtime import UnitOfWork

__all__ = ["MissingDependency", "UnitCallback", "require"]

# Called when an integration's unit of work ends, with what the integration knows about
# it: ``{"method": "GET", "route": "/users/{user_id}"}`` for a request (``"path"`` instead
# of ``"route"`` when no route matched), ``{"test": node id}`` for a test.
UnitCallback: TypeAlias = Callable[["UnitOfWork", Mapping[str, str]], None]


class MissingDependency(ImportError):
    """An integration's optional dependency is not installed; the message names the extra."""

    def __init__(self, integration: str, module: str, extra: str) -> None:
        self.integration = integration
        self.module = module
        self.extra = extra
        super().__init__(
            f"sqla_doctor.integrations.{integration} needs {module!r}, which is not "
            f"installed: pip install 'sqla-doctor[{extra}]'",
            name=module,
        )


def require(module: str, *, extra: str, integration: str) -> ModuleType:
    """Import an optional dependency, or raise :class:`MissingDependency` naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependency(integration, module, extra) from error
