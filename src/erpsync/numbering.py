"""Business numbers (NumProjet, client Code, NumCommande) from atomic per-type counters.

The spec's SP_GenererNumero: one counter row per number type and year in
``tb_Numerotation``, advanced by an UPDATE inside the caller's transaction, so
two transactions never draw the same number (the second waits on the row lock).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from erpsync.schema import ErpTables

PROJET = "PROJET"
CLIENT = "CLIENT"
COMMANDE = "COMMANDE"


@dataclass(frozen=True)
class NumberFormat:
    """How a number type is written: ``template`` gets ``n`` and ``annee`` (year)."""

    template: str

    @property
    def yearly(self) -> bool:
        """Whether the series restarts each year (the template shows the year)."""
        return "{annee" in self.template

    def render(self, n: int, year: int) -> str:
        """The business number for counter value ``n`` in ``year``."""
        return self.template.format(n=n, annee=year)


DEFAULT_FORMATS: dict[str, NumberFormat] = {
    PROJET: NumberFormat("PRJ-{annee}-{n:05d}"),
    CLIENT: NumberFormat("CLI-{n:05d}"),
    COMMANDE: NumberFormat("CMD-{annee}-{n:05d}"),
}


def reserve(conn: Connection, schema: ErpTables, kind: str, year: int, count: int = 1) -> int:
    """Advance the ``kind`` counter of ``year`` by ``count``; return the first number drawn.

    Runs in the caller's transaction ("already inside a transaction" mode): the
    counter row stays locked until it commits, and rolls back with it.
    """
    counters = schema["tb_Numerotation"]
    key = (counters.c.TypeNumero == kind) & (counters.c.Annee == year)
    bump = update(counters).where(key).values(DernierNumero=counters.c.DernierNumero + count)
    if conn.execute(bump).rowcount == 0:
        try:
            with conn.begin_nested():
                conn.execute(insert(counters).values(TypeNumero=kind, Annee=year, DernierNumero=count))
        except IntegrityError:  # another transaction created the row first
            conn.execute(bump)
    last = conn.execute(select(counters.c.DernierNumero).where(key)).scalar_one()
    return int(last) - count + 1
