"""Async database engine, sessions and migrations (PostgreSQL or embedded SQLite)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.errors import DatabaseUnavailableError
from shared.logging import mask_secrets

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    OSError,
    asyncio.TimeoutError,
    ConnectionError,
)


def alembic_config() -> Config:
    """Return an Alembic config pointing at this package's migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, CONNECTION_ERRORS)


class Database:
    """One async engine, its session factory, and migrate-once-on-first-use."""

    def __init__(self, url: str, *, connect_timeout_s: float = 3.0, echo: bool = False) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        self.connect_timeout_s = connect_timeout_s
        kwargs: dict[str, object] = {"echo": echo, "pool_pre_ping": True}
        if self.dialect == "sqlite":
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["connect_args"] = {"timeout": connect_timeout_s, "command_timeout": 30}
            kwargs["pool_timeout"] = connect_timeout_s
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 10
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._migrated = False
        self._lock = asyncio.Lock()

    @property
    def safe_url(self) -> str:
        """Return the URL with its password masked."""
        return mask_secrets(self.url)

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (once per process)."""
        if self._migrated:
            return
        async with self._lock:
            if self._migrated:
                return
            try:
                async with asyncio.timeout(self.connect_timeout_s + 30):
                    async with self.engine.begin() as conn:
                        await conn.run_sync(_upgrade)
            except CONNECTION_ERRORS as e:
                raise DatabaseUnavailableError(
                    f"Database {self.safe_url} is unreachable: {type(e).__name__}"
                ) from e
            self._migrated = True
            log.info("database %s migrated to head", self.safe_url)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Yield a session; connection failures become DatabaseUnavailableError (503)."""
        await self.migrate()
        try:
            async with asyncio.timeout(self.connect_timeout_s + 60):
                async with self.sessions() as session:
                    yield session
        except DatabaseUnavailableError:
            raise
        except Exception as e:
            if _is_connection_error(e):
                raise DatabaseUnavailableError(
                    f"Database {self.safe_url} is unreachable: {type(e).__name__}"
                ) from e
            raise

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _upgrade(sync_conn) -> None:  # type: ignore[no-untyped-def]
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
