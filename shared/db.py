"""Async database engine, sessions and migrations (PostgreSQL or embedded SQLite).

Migrations run when a service starts (and with `trading migrate`), never on a request path.

Every wait on PostgreSQL is bounded, a silent network drop included: connecting and waiting
for a pooled connection by ``connect_timeout_s``, each statement by ``command_timeout_s``
(asyncpg's ``command_timeout``), and a whole :meth:`Database.session` by the sum of the two
(:attr:`Database.bound_s`); a session that overruns answers 503 at once while its dead
connection is torn down in the background. TCP keepalive (client side, and asked of the
server) finds dead idle connections; ``TCP_USER_TIMEOUT`` cuts ones whose sent data is never
acknowledged.

After a connection failure (refused, reset, timed out) a circuit breaker answers 503 at once
for ``connect_timeout_s`` instead of letting every request wait out its own bound; then one
session tries the database again (``/health`` always asks it, and its success closes the
breaker). Load is not an outage: a pool with no free connection, or a timeout within
``TIMEOUT_GRACE_S`` of a session that worked, answers 503 ``database_busy`` (Retry-After)
but does not open the breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.breaker import BreakerState, CircuitBreaker, Permit, log_transitions
from shared.config import BaseServiceSettings
from shared.errors import DatabaseBusyError, DatabaseUnavailableError
from shared.logging import mask_secrets
from shared.metrics import publish_breaker
from shared.migrate import Schema, describe, upgrade
from shared.tables import PLATFORM

log = logging.getLogger(__name__)

# Key of the PostgreSQL advisory lock held while migrating (any fixed 64-bit number).
MIGRATE_LOCK = 0x7472_6164_696E_67  # "trading"
MIGRATE_TIMEOUT_S = 60.0
TIMEOUT_GRACE_S = 2.0
POOL_SIZE = 10  # PostgreSQL connections kept per process
MAX_OVERFLOW = 10  # more opened under load, closed when returned

# TCP keepalive on PostgreSQL connections: first probe after this idle time, then every
# KEEPALIVE_INTERVAL_S, dead after KEEPALIVE_COUNT unanswered probes.
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 3

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    OSError,
    asyncio.TimeoutError,
    ConnectionError,
    PoolTimeoutError,  # no pooled connection came free within the pool timeout
)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, CONNECTION_ERRORS)


class Database:
    """One async engine and its session factory; migrations run once, under a lock."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 3.0,
        command_timeout_s: float = 10.0,
        sslmode: str | None = None,
        echo: bool = False,
    ) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        kwargs: dict[str, object] = {"echo": echo, "pool_pre_ping": True}
        self.sqlite_path: Path | None = None
        if self.dialect == "sqlite":
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                self.sqlite_path = Path(path)
                self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            connect_args: dict[str, object] = {
                "timeout": connect_timeout_s,
                "command_timeout": command_timeout_s,
                # the server's side of keepalive: it drops sessions of clients that vanished
                "server_settings": {
                    "tcp_keepalives_idle": str(KEEPALIVE_IDLE_S),
                    "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_S),
                    "tcp_keepalives_count": str(KEEPALIVE_COUNT),
                },
            }
            if sslmode:  # libpq's names; asyncpg takes them as its `ssl` argument
                connect_args["ssl"] = sslmode
            kwargs["connect_args"] = connect_args
            kwargs["pool_timeout"] = connect_timeout_s
            kwargs["pool_size"] = POOL_SIZE
            kwargs["max_overflow"] = MAX_OVERFLOW
        self.connect_args = kwargs["connect_args"]
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            user_timeout_ms = int((connect_timeout_s + command_timeout_s) * 1000)
            event.listen(
                self.engine.sync_engine,
                "connect",
                lambda conn, _record: _tcp_keepalive(conn, user_timeout_ms),
            )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.clock = time.monotonic
        self.breaker = CircuitBreaker(
            "database",
            failure_threshold=1,
            cooldown_s=connect_timeout_s,
            on_change=_db_breaker,
            clock=lambda: self.clock(),
        )
        # A timeout this soon after a session worked is load (a busy pool or event loop)
        self.timeout_grace_s = max(TIMEOUT_GRACE_S, connect_timeout_s)
        self._last_ok = -float("inf")
        self.busy = 0  # sessions refused for want of a free pooled connection
        self.slow = 0  # sessions that timed out soon after a success (not an outage)
        self._retry: asyncio.Task[None] | None = None
        self._schemas: tuple[Schema, ...] = (PLATFORM,)

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> Database:
        """Return the database a service's settings name (URL, timeouts, TLS)."""
        return cls(
            settings.resolved_database_url(),
            connect_timeout_s=settings.database_connect_timeout_s,
            command_timeout_s=settings.database_command_timeout_s,
            sslmode=settings.database_sslmode,
        )

    @property
    def bound_s(self) -> float:
        """Return the longest a session may wait on the database (connect + command)."""
        return self.connect_timeout_s + self.command_timeout_s

    @property
    def safe_url(self) -> str:
        """Return the URL with its password masked."""
        return mask_secrets(self.url)

    def _unavailable(self, e: BaseException) -> DatabaseUnavailableError:
        return DatabaseUnavailableError(
            "The database is not answering; retry shortly.",
            log_detail=f"database {self.safe_url} unreachable: {type(e).__name__}: {e}",
        )

    async def migrate(self, *schemas: Schema) -> bool:
        """Bring the platform's tables and each of schemas' to the head of its Alembic chain;
        return True if this call changed any.

        Several processes may start at once on one database: PostgreSQL serialises them with a
        transaction-scoped advisory lock, SQLite with a lock file beside the database, so the
        first one upgrades and the others find the schema at head.
        """
        chains = _with_platform(schemas)
        try:
            async with asyncio.timeout(self.connect_timeout_s + MIGRATE_TIMEOUT_S):
                if self.sqlite_path is not None:
                    async with _file_lock(Path(f"{self.sqlite_path}.migrate.lock")):
                        return await self._upgrade_locked(chains)
                return await self._upgrade_locked(chains)
        except CONNECTION_ERRORS as e:
            raise self._unavailable(e) from e

    async def start(
        self, *schemas: Schema, retry_s: float = 2.0, max_retry_s: float = 30.0
    ) -> None:
        """Migrate schemas now; if the database is down, log it and keep retrying in the
        background.

        A service starts either way: requests meanwhile answer 503 `database_unavailable`
        and `/health` says so, until the database answers and the schema is at head.
        """
        self._schemas = _with_platform(schemas)
        try:
            await self.migrate(*self._schemas)
        except DatabaseUnavailableError as e:
            log.error("starting without database: %s; retrying in the background", e.log_detail)
            self._retry = asyncio.create_task(self._migrate_until_up(retry_s, max_retry_s))

    async def _migrate_until_up(self, retry_s: float, max_retry_s: float) -> None:
        wait = retry_s
        while True:
            await asyncio.sleep(wait)
            try:
                await self.migrate(*self._schemas)
            except DatabaseUnavailableError:
                wait = min(wait * 2, max_retry_s)
                continue
            log.warning("database %s is reachable again; schema at head", self.safe_url)
            return

    async def _upgrade_locked(self, schemas: tuple[Schema, ...]) -> bool:
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK}
                )
            before, after = await conn.run_sync(upgrade, schemas)
        if before == after:
            log.info("database %s already at schema revision %s", self.safe_url, describe(after))
            return False
        log.info(
            "database %s migrated from %s to %s", self.safe_url, describe(before), describe(after)
        )
        return True

    async def ping(self, timeout_s: float | None = None) -> None:
        """Run `SELECT 1`; raise DatabaseUnavailableError unless it answers within timeout_s.

        The answer is bounded even on a silent network drop: the probe runs in its own task,
        and tearing down its dead connection goes on in the background after the verdict.
        """
        permit = self.breaker.allow() or Permit(trial=False)  # a probe always asks
        probe = asyncio.ensure_future(self._select_one())
        probe.add_done_callback(_swallow)
        done, _ = await asyncio.wait({probe}, timeout=timeout_s or self.connect_timeout_s)
        if not done:
            probe.cancel()
            if self.pool_full():  # the probe waited for a connection: load, not an outage
                raise self._failed(PoolTimeoutError(), permit)
            self.breaker.failure(permit)
            raise self._unavailable(TimeoutError())
        try:
            probe.result()
        except Exception as e:
            if isinstance(e, PoolTimeoutError):
                raise self._failed(e, permit) from e
            if _is_connection_error(e):
                self.breaker.failure(permit)
                raise self._unavailable(e) from e
            self.breaker.release(permit)
            raise
        self._last_ok = self.clock()
        self.breaker.success(permit)

    async def _select_one(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Yield a session; connection failures become DatabaseUnavailableError (503).

        The whole block is bounded by :attr:`bound_s`, and so is the wait for its teardown:
        a connection lost to a silent network drop is closed in the background.
        """
        permit = self.breaker.allow()
        if permit is None:
            raise DatabaseUnavailableError(
                "The database is not answering; retry shortly.",
                log_detail=f"database {self.safe_url}: circuit open after a connection failure",
            )
        session = self.sessions()
        try:
            async with asyncio.timeout(self.bound_s):
                yield session
        except DatabaseUnavailableError:
            self.breaker.release(permit)
            raise
        except BaseException as e:
            if isinstance(e, Exception) and _is_connection_error(e):
                raise self._failed(e, permit) from e
            self.breaker.release(permit)
            raise
        else:
            self._last_ok = self.clock()
            self.breaker.success(permit)
        finally:
            await self._close(session)

    def _failed(self, e: BaseException, permit: Permit | None) -> DatabaseUnavailableError:
        """Record a connection failure; return the 503 to raise.

        Load is not an outage: a pool with no free connection, or a timeout within
        ``TIMEOUT_GRACE_S`` of a session that worked (a busy pool or event loop makes
        statements late), answers 503 `database_busy` without opening the breaker. Refused or
        reset connections, and timeouts with no success for the grace, open it.
        """
        if isinstance(e, PoolTimeoutError):
            self.busy += 1
            self.breaker.release(permit)
            return self._busy(e)
        timeout = isinstance(e, TimeoutError) and not isinstance(e, ConnectionError)
        if timeout and self.clock() - self._last_ok < self.timeout_grace_s:
            self.slow += 1
            self.breaker.release(permit)
            return self._busy(e)
        self.breaker.failure(permit)
        return self._unavailable(e)

    def pool_full(self) -> bool:
        """Return whether every pooled connection is checked out (PostgreSQL only)."""
        pool = self.engine.pool
        checkedout = getattr(pool, "checkedout", None)
        if self.dialect == "sqlite" or checkedout is None:
            return False
        return bool(checkedout() >= POOL_SIZE + MAX_OVERFLOW)

    def _busy(self, e: BaseException) -> DatabaseUnavailableError:
        busy = DatabaseBusyError(
            "The database is busy (every connection in use); retry shortly.",
            log_detail=f"database {self.safe_url} busy: {type(e).__name__}: {e}",
        )
        busy.retry_after_s = 1
        return busy

    async def _close(self, session: AsyncSession) -> None:
        """Close session, waiting at most the connect timeout (the rest goes on behind)."""
        closing = asyncio.ensure_future(session.close())
        closing.add_done_callback(_swallow)
        done, _ = await asyncio.shield(asyncio.wait({closing}, timeout=self.connect_timeout_s))
        if not done:
            log.warning("closing a database session is slow; finishing it in the background")

    async def dispose(self) -> None:
        """Stop retrying migrations and close every pooled connection."""
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
            self._retry = None
        await self.engine.dispose()


def _with_platform(schemas: tuple[Schema, ...]) -> tuple[Schema, ...]:
    """Return the platform's schema, then schemas, each once (by name, first wins)."""
    chains: dict[str, Schema] = {}
    for schema in (PLATFORM, *schemas):
        chains.setdefault(schema.name, schema)
    return tuple(chains.values())


@asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive flock on path (waiting in a worker thread, not on the event loop).

    flock belongs to the open file, not to a thread, so any thread may release it; two
    processes, or two engines of one process, exclude each other.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _db_breaker(breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
    """Log the database breaker's transitions and publish them (circuit_breaker_state)."""
    log_transitions(breaker, old, new)
    publish_breaker(breaker, old, new)


def _swallow(task: asyncio.Future[None]) -> None:
    """Retrieve a background probe's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _tcp_keepalive(dbapi_conn: object, user_timeout_ms: int) -> None:
    """Turn on TCP keepalive (and a user timeout) on a new asyncpg connection's socket."""
    transport = getattr(getattr(dbapi_conn, "driver_connection", None), "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket: nothing between client and server can drop
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
        ("TCP_USER_TIMEOUT", user_timeout_ms),
    ):
        if hasattr(socket, name):  # Linux has all four; macOS lacks TCP_USER_TIMEOUT
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
