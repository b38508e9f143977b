"""The operations journal, ``tb_Logs`` (the spec's SP_LogOperation).

A success is journaled inside the operation's transaction, so it exists only
if the operation does. A failure is journaled after the rollback, in a
transaction of its own, so it survives it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert

from erpsync.db import Database
from erpsync.dialects import dialect_for
from erpsync.schema import erp_tables


def log(
    conn: Connection,
    operation: str,
    table: str | None,
    source_id: int | None,
    new_id: int | None,
    message: str,
    success: bool,
    user: str | None,
) -> None:
    """Append one journal row inside ``conn``'s transaction."""
    logs = erp_tables(dialect_for(conn.engine.url))["tb_Logs"]
    conn.execute(
        insert(logs).values(
            DateLog=datetime.now().replace(microsecond=0),
            Operation=operation,
            TableCible=table,
            IdSource=source_id,
            IdNouveau=new_id,
            Message=message[:1000],
            Succes=1 if success else 0,
            Utilisateur=user,
        )
    )


def log_failure(
    db: Database, operation: str, table: str | None, source_id: int | None, message: str, user: str | None
) -> None:
    """Journal a failed operation in a transaction of its own (after the operation rolled back)."""
    with db.begin() as conn:
        log(conn, operation, table, source_id, -1, message, False, user)
