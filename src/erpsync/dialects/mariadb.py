"""MariaDB (and MySQL), through PyMySQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, String, Table, cast, func, select
from sqlalchemy.dialects.mysql import CHAR
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from erpsync.dialects.base import Dialect, first_line, single_pk
from erpsync.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    DatabaseNotFound,
    ErpSyncError,
)

# PyMySQL error numbers (MariaDB's and the client's).
CANNOT_CONNECT = {2002, 2003, 2005, 2006, 2013}
ACCESS_DENIED = {1044, 1045, 1698}
UNKNOWN_DATABASE = 1049
DEADLOCK = {1213, 1205}  # deadlock found; lock wait timeout exceeded


class MariaDB(Dialect):
    """MariaDB 10.x / MySQL 8 with InnoDB and utf8mb4."""

    name = "mariadb"
    label = "MariaDB"
    backends = ("mysql", "mariadb")
    driver = "mysql+pymysql"
    default_port = 3306

    def engine_options(self) -> dict[str, Any]:
        return {"pool_recycle": 3600, "connect_args": {"connect_timeout": 10, "charset": "utf8mb4"}}

    def table_options(self) -> dict[str, Any]:
        return {
            "mysql_engine": "InnoDB",
            "mysql_charset": "utf8mb4",
            "mysql_collate": "utf8mb4_unicode_ci",
        }

    def is_retryable(self, exc: DBAPIError) -> bool:
        return bool(exc.orig is not None and exc.orig.args and exc.orig.args[0] in DEADLOCK)

    def reserve_ids(self, conn: Connection, table: Table) -> int:
        """Lock the last index record and the gap above it: others' inserts wait for our commit."""
        pk = single_pk(table)
        last = conn.execute(select(pk).order_by(pk.desc()).limit(1).with_for_update()).scalar()
        return int(last or 0)

    def zero_pad(self, number: ColumnElement[Any], width: int) -> ColumnElement[str]:
        text_ = cast(number, CHAR)
        return func.lpad(text_, func.greatest(width, func.char_length(text_)), "0", type_=String)

    def translate_error(self, exc: DBAPIError, url: URL) -> ErpSyncError:
        code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
        reason = first_line(exc.orig)
        if code in CANNOT_CONNECT:
            return ConnectionFailed(
                "cannot reach the {engine} server at {address}: {reason}",
                "check the host and port, and that the server is running",
                engine=self.label,
                address=self.address(url),
                reason=reason,
            )
        if code in ACCESS_DENIED:
            return AuthenticationFailed(
                "{engine} refused the login of user {user}: {reason}",
                "check the user name and password in the URL",
                engine=self.label,
                user=url.username,
                reason=reason,
            )
        if code == UNKNOWN_DATABASE:
            return DatabaseNotFound(
                "database {name} does not exist on the {engine} server at {address}",
                "check the name, or create it with: erpsync db init {url} --create-database",
                name=url.database,
                engine=self.label,
                address=self.address(url),
                url=url.render_as_string(hide_password=True),
            )
        return super().translate_error(exc, url)
