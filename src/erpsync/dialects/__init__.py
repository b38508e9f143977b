"""What differs between SQLite, MariaDB and PostgreSQL, one module per engine.

Each engine module defines a ``Dialect`` subclass; ``dialect_for`` picks it from
a URL's driver name, the way Litestream picks a backend from a URL scheme. The
rest of erpsync never tests ``if engine == …``: it asks its dialect.
"""

from __future__ import annotations

from sqlalchemy.engine import URL

from erpsync.dialects.base import Dialect
from erpsync.dialects.mariadb import MariaDB
from erpsync.dialects.postgresql import PostgreSQL
from erpsync.dialects.sqlite import SQLite
from erpsync.errors import UnsupportedEngine

DIALECTS: tuple[Dialect, ...] = (SQLite(), MariaDB(), PostgreSQL())


def dialect_for(url: URL) -> Dialect:
    """The dialect that handles ``url``, from its backend name (``mysql+pymysql`` → MariaDB)."""
    backend = url.get_backend_name()
    for dialect in DIALECTS:
        if backend in dialect.backends:
            return dialect
    raise UnsupportedEngine(
        "erpsync does not support {scheme} databases",
        "use SQLite, MariaDB (mysql+pymysql://…) or PostgreSQL (postgresql+psycopg://…)",
        scheme=backend,
    )


__all__ = ["DIALECTS", "Dialect", "dialect_for"]
