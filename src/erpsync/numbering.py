"""Business numbers (NumProjet, client Code, NumCommande) from atomic per-type counters.

The spec's SP_GenererNumero: one counter row per number type and year in
``tb_Numerotation``, advanced by an UPDATE, so two transactions never draw the
same number (the second waits on the row lock until the first ends). Like the
procedure's ``p_InTransaction`` flag, ``generate`` runs inside the caller's
transaction when given a connection, or in a transaction of its own when given
a database.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, case, insert, select, update
from sqlalchemy.exc import IntegrityError

from erpsync.db import Database
from erpsync.dialects import dialect_for
from erpsync.errors import InvalidArgument
from erpsync.schema import ErpTables, erp_tables

PROJET = "PROJET"
CLIENT = "CLIENT"
COMMANDE = "COMMANDE"


@dataclass(frozen=True)
class NumberFormat:
    """How a number type is written: ``template`` has one ``{n}`` (e.g. ``{n:05d}``) and may
    show the year as ``{annee}``; ``PRJ-{annee}-{n:05d}`` gives ``PRJ-2026-00001``."""

    template: str

    def __post_init__(self) -> None:
        fields = [(name, spec) for _, name, spec, _ in string.Formatter().parse(self.template) if name]
        names = [name for name, _ in fields]
        specs = dict(fields)
        if names.count("n") != 1 or set(names) - {"n", "annee"} or not _valid_spec(specs["n"] or ""):
            raise InvalidArgument(
                "number format {template!r} must contain {{n}} once (e.g. {{n:05d}}) and may contain "
                "{{annee}}",
                "write a format such as PRJ-{{annee}}-{{n:05d}} or CLI-{{n:03d}}",
                template=self.template,
            )

    @property
    def yearly(self) -> bool:
        """Whether the series restarts each year (the template shows the year)."""
        return "{annee" in self.template

    def render(self, n: int, year: int) -> str:
        """The business number for counter value ``n`` in ``year``."""
        return self.template.format(n=n, annee=year)

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        pattern = ""
        for literal, name, _, _ in string.Formatter().parse(self.template):
            pattern += re.escape(literal)
            if name == "n":
                pattern += r"(?P<n>\d+)"
            elif name == "annee":
                pattern += r"(?P<annee>\d{4})"
        return re.compile(pattern)

    def parse(self, value: str) -> tuple[int, int] | None:
        """(series year, n) of a number written in this format, or None when it is not one."""
        found = self._pattern.fullmatch(value)
        if found is None:
            return None
        return (int(found["annee"]) if self.yearly else 0), int(found["n"])

    def sql_parts(self, year: int) -> tuple[str, int, str]:
        """(text before n, zero-padded width of n, text after n) for building numbers in SQL."""
        prefix, suffix, width = "", "", 0
        seen_n = False
        for literal, name, spec, _ in string.Formatter().parse(self.template):
            piece = literal + (format(year, spec or "") if name == "annee" else "")
            if seen_n:
                suffix += piece
            elif name == "n":
                prefix += literal
                width = int(spec.rstrip("d").lstrip("0") or "0") if spec else 0
                seen_n = True
            else:
                prefix += piece
        return prefix, width, suffix


def _valid_spec(spec: str) -> bool:
    return spec in ("", "d") or (spec.startswith("0") and spec.endswith("d") and spec[1:-1].isdigit())


DEFAULT_FORMATS: dict[str, NumberFormat] = {
    PROJET: NumberFormat("PRJ-{annee}-{n:05d}"),
    CLIENT: NumberFormat("CLI-{n:05d}"),
    COMMANDE: NumberFormat("CMD-{annee}-{n:05d}"),
}


def series_year(fmt: NumberFormat, year: int) -> int:
    """The counter row a number of ``year`` is drawn from: the year, or 0 for a series without one."""
    return year if fmt.yearly else 0


def reserve(conn: Connection, schema: ErpTables, kind: str, year: int, count: int = 1) -> int:
    """Advance the ``kind`` counter of ``year`` by ``count``; return the first number drawn.

    Runs in the caller's transaction: the counter row stays locked until it
    commits, and rolls back with it.
    """
    counters = schema["tb_Numerotation"]
    key = (counters.c.TypeNumero == kind) & (counters.c.Annee == year)
    _bump(conn, schema, kind, year, counters.c.DernierNumero + count, count)
    last = conn.execute(select(counters.c.DernierNumero).where(key)).scalar_one()
    return int(last) - count + 1


def catch_up(conn: Connection, schema: ErpTables, kind: str, values: Iterable[Any]) -> None:
    """Move the ``kind`` counters past every number among ``values`` (numbers received by sync).

    A PC that received the server's numbers must not draw one of them next:
    counters only move forward, each to the largest number seen in its year.
    """
    fmt = DEFAULT_FORMATS[kind]
    largest: dict[int, int] = {}
    for value in values:
        parsed = fmt.parse(value) if isinstance(value, str) else None
        if parsed is not None:
            largest[parsed[0]] = max(largest.get(parsed[0], 0), parsed[1])
    last = schema["tb_Numerotation"].c.DernierNumero
    for year, n in largest.items():
        _bump(conn, schema, kind, year, case((last < n, n), else_=last), n)


def _bump(conn: Connection, schema: ErpTables, kind: str, year: int, value: Any, first: int) -> None:
    """Set the counter of (``kind``, ``year``) to ``value``, or create it at ``first``."""
    counters = schema["tb_Numerotation"]
    key = (counters.c.TypeNumero == kind) & (counters.c.Annee == year)
    bump = update(counters).where(key).values(DernierNumero=value)
    if conn.execute(bump).rowcount == 0:
        try:
            with conn.begin_nested():
                conn.execute(insert(counters).values(TypeNumero=kind, Annee=year, DernierNumero=first))
        except IntegrityError:  # another transaction created the row first
            conn.execute(bump)


def peek(conn: Connection, schema: ErpTables, kind: str, year: int) -> int:
    """The next number ``reserve`` would draw, without drawing it (for dry runs)."""
    counters = schema["tb_Numerotation"]
    key = (counters.c.TypeNumero == kind) & (counters.c.Annee == year)
    last = conn.execute(select(counters.c.DernierNumero).where(key)).scalar()
    return int(last or 0) + 1


def generate(
    target: Database | Connection, kind: str, *, fmt: NumberFormat | None = None, on: date | None = None
) -> str:
    """Draw one business number of ``kind`` (SP_GenererNumero).

    Given a ``Connection``, it runs inside the caller's transaction (the spec's
    ``p_InTransaction = 1``); given a ``Database``, in a transaction of its own (``0``).
    """
    fmt = fmt or DEFAULT_FORMATS[kind]
    year = (on or date.today()).year
    if isinstance(target, Database):
        with target.begin() as conn:
            return generate(conn, kind, fmt=fmt, on=on)
    schema = erp_tables(dialect_for(target.engine.url))
    return fmt.render(reserve(target, schema, kind, series_year(fmt, year)), year)
