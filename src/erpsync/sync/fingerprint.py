"""The schema check two nodes make before exchanging anything.

Each node sends the fingerprint of its synced tables' shapes (names, column
types by family, nullability, primary and unique keys, references) and the
shapes themselves. Equal fingerprints: the sync goes on. Otherwise it stops
before reading a row, with the tables and columns that differ.
"""

from __future__ import annotations

from typing import Any, Protocol

from erpsync.errors import SchemaMismatch
from erpsync.i18n import tr

Shapes = dict[str, dict[str, Any]]


def differences(here: Shapes, there: Shapes) -> list[str]:
    """Every difference between two nodes' synced tables, as short sentences."""
    out: list[str] = []
    for table in sorted(set(here) | set(there)):
        if table not in there:
            out.append(tr("{table} is synced here only", table=table))
            continue
        if table not in here:
            out.append(tr("{table} is synced on the peer only", table=table))
            continue
        mine, theirs = here[table], there[table]
        for column in sorted(set(mine["columns"]) | set(theirs["columns"])):
            a, b = mine["columns"].get(column), theirs["columns"].get(column)
            if a == b:
                continue
            if b is None:
                out.append(tr("{table}.{column} exists here only", table=table, column=column))
            elif a is None:
                out.append(tr("{table}.{column} exists on the peer only", table=table, column=column))
            else:
                out.append(
                    tr(
                        "{table}.{column} is {here} here, {there} on the peer",
                        table=table,
                        column=column,
                        here=a,
                        there=b,
                    )
                )
        for part, label in (("key", "primary key"), ("unique", "unique keys"), ("refs", "references")):
            if mine.get(part) != theirs.get(part):
                out.append(tr("{table}: the {what} differ", table=table, what=tr(label)))
    return out


class Described(Protocol):
    """What a node's hello carries about its schema."""

    @property
    def shapes(self) -> Shapes: ...

    @property
    def fingerprint(self) -> str: ...


def check(here_name: str, here: Described, there_name: str, there: Described) -> None:
    """Raise ``SchemaMismatch`` naming the differences when the fingerprints differ."""
    if here.fingerprint == there.fingerprint:
        return
    found = differences(here.shapes, there.shapes) or [tr("the schema fingerprints differ")]
    raise SchemaMismatch(
        "{here} and {there} do not sync the same tables: {differences}",
        "make the schemas the same (erpsync db init on both), then run erpsync node init on both",
        here=here_name,
        there=there_name,
        differences="; ".join(found),
    )
