"""What an ERP database holds: rows per table and the total of its orders."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select

from erpsync.db import Database
from erpsync.schema import ERP_TABLES, require_schema


@dataclass(frozen=True)
class Summary:
    """Row counts per reference table, parents first, and the sum of MontantHT."""

    rows: dict[str, int]
    total_ht: Decimal


def summarize(db: Database) -> Summary:
    """Count the rows of every reference table of ``db``."""
    schema = require_schema(db)
    with db.connect() as conn:
        rows = {
            name: int(conn.execute(select(func.count()).select_from(schema[name])).scalar_one())
            for name in ERP_TABLES
        }
        total = conn.execute(select(func.coalesce(func.sum(schema["tb_Commande"].c.MontantHT), 0)))
        total_ht = Decimal(str(total.scalar_one())).quantize(Decimal("0.01"))
    return Summary(rows, total_ht)
