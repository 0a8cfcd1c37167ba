"""``sqla-doctor pool URL``: do the pools of all workers fit in the server's connections?

Reads ``max_connections``, the reserved slots and the connections in use from the server,
and compares them with ``workers × engines × (pool_size + max_overflow)``. PostgreSQL only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

# SQLAlchemy's QueuePool defaults.
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10


class PoolCheckError(Exception):
    """The check cannot run; the message is one line for the user."""


@dataclass(frozen=True)
class ServerCapacity:
    version: str
    max_connections: int
    superuser_reserved: int
    reserved: int  # `reserved_connections` (PostgreSQL 16+), else 0
    in_use: int  # client connections other than ours

    @property
    def available(self) -> int:
        return self.max_connections - self.superuser_reserved - self.reserved - self.in_use


@dataclass(frozen=True)
class PoolPlan:
    workers: int = 1
    engines: int = 1
    pool_size: int = DEFAULT_POOL_SIZE
    max_overflow: int = DEFAULT_MAX_OVERFLOW

    @property
    def peak(self) -> int:
        return self.workers * self.engines * (self.pool_size + self.max_overflow)

    @property
    def steady(self) -> int:
        return self.workers * self.engines * self.pool_size


def _sync_url(raw: str) -> URL:
    try:
        url = make_url(raw)
    except ArgumentError as error:
        raise PoolCheckError(f"not a database URL: {error}") from None
    if url.get_backend_name() != "postgresql":
        raise PoolCheckError(
            f"only PostgreSQL servers are supported, not {url.get_backend_name()!r}"
        )
    # The check itself is synchronous; any PostgreSQL URL of the app is fine as input.
    driver = url.get_driver_name()
    if driver in ("asyncpg", "psycopg_async", "aiopg"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def read_capacity(raw_url: str) -> ServerCapacity:
    url = _sync_url(raw_url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            settings: dict[str, str] = dict(
                connection.execute(
                    text(
                        "SELECT name, setting FROM pg_settings WHERE name IN "
                        "('max_connections', 'superuser_reserved_connections', "
                        "'reserved_connections')"
                    )
                ).all()
            )
            in_use = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
            version = connection.execute(text("SHOW server_version")).scalar_one()
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise PoolCheckError(
            f"cannot query {url.render_as_string(hide_password=True)}: {reason}"
        ) from None
    finally:
        engine.dispose()
    return ServerCapacity(
        version=str(version),
        max_connections=int(settings["max_connections"]),
        superuser_reserved=int(settings.get("superuser_reserved_connections", 0)),
        reserved=int(settings.get("reserved_connections", 0)),
        in_use=int(in_use),
    )


def report(raw_url: str, capacity: ServerCapacity, plan: PoolPlan) -> tuple[bool, str]:
    """(fits, text) for the user."""
    shown = make_url(raw_url).render_as_string(hide_password=True)
    rows = [
        ("max_connections", capacity.max_connections),
        ("superuser_reserved_connections", -capacity.superuser_reserved),
    ]
    if capacity.reserved:
        rows.append(("reserved_connections", -capacity.reserved))
    rows += [("in use now by other clients", -capacity.in_use), ("available", capacity.available)]
    lines = [f"Server {shown} (PostgreSQL {capacity.version})"]
    lines += [f"  {label:<32}{value:>6}" for label, value in rows]
    engines = f" × {plan.engines} engines" if plan.engines != 1 else ""
    lines.append(
        f"Pools: {plan.workers} worker{'s' if plan.workers != 1 else ''}{engines} × "
        f"(pool_size {plan.pool_size} + max_overflow {plan.max_overflow}) = "
        f"{plan.peak} connections at peak ({plan.steady} kept open)"
    )
    spare = capacity.available - plan.peak
    fits = spare >= 0
    if fits:
        lines.append(f"OK: the pools fit, with {spare} connections to spare.")
    else:
        per_worker = max(capacity.available // max(plan.workers * plan.engines, 1), 0)
        lines.append(
            f"PROBLEM: the pools need {plan.peak} connections but only {capacity.available} "
            f"are available ({-spare} short). Under load, checkouts wait and then fail with "
            f"`QueuePool limit of size {plan.pool_size} overflow {plan.max_overflow} reached` "
            f"or the server refuses with `too many clients already`."
        )
        lines.append(
            f"  Fix: keep pool_size + max_overflow ≤ {per_worker} per engine and worker, reduce "
            "the workers, or put PgBouncer (transaction pooling) in front of the server."
        )
    return fits, "\n".join(lines) + "\n"
