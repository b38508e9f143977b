"""What sync knows about a synced table: its columns, keys, references and metadata tables.

Everything comes from reflecting the database, never from the reference ERP
schema: any table with a primary key can be synced. Names are compared in
lower case (PostgreSQL folds them, MariaDB on Windows too); nodes name tables
and columns to each other in lower case.

A table whose primary key is one integer column has a *surrogate* key: its
local ids may differ from node to node, rows are identified by global ids, and
columns that reference it carry global ids between nodes. Any other primary
key is *natural*: it means the same row on every node, so the global id is
derived from it. A key column may reference another synced table (a link table
keyed by two references, a table sharing its parent's id): it then holds that
row's local id, travels as its global id, and the global id is derived from
it, so the link follows the rows it links wherever their ids differ.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, MetaData, Table, inspect
from sqlalchemy.engine.interfaces import ReflectedColumn
from sqlalchemy.sql import sqltypes
from sqlalchemy.types import TypeEngine

from erpsync.dialects import Dialect
from erpsync.errors import ErpSyncError
from erpsync.schema import type_signature
from erpsync.sync.meta import log_table, shadow_table


class NoPrimaryKey(ErpSyncError):
    """A table chosen for sync has no primary key."""


class UnknownTable(ErpSyncError):
    """A table named on the command line does not exist."""


@dataclass(frozen=True)
class SyncColumn:
    """One column of a synced table."""

    name: str
    """As the database stores it."""
    key: str
    """Lower case: how nodes name it to each other."""
    type: TypeEngine[Any]
    nullable: bool
    ref: str | None = None
    """The synced surrogate-key table whose ids it holds (as global ids between nodes)."""

    @property
    def text(self) -> bool:
        """Whether it holds text (compared byte for byte by the MariaDB triggers)."""
        return isinstance(self.type, sqltypes.String)


@dataclass(frozen=True)
class Settings:
    """What ``erpsync_table.settings`` keeps about a synced table."""

    columns: tuple[str, ...]
    """Non-key column keys in clock order: column *i* has clock ``c<i>`` and mask bit *i*."""
    keys: tuple[str, ...]
    shape: dict[str, Any]
    column_policies: dict[str, str] = field(default_factory=dict)
    series: dict[str, str] = field(default_factory=dict)
    """Business-key column → numbering series used to renumber it on a collision."""

    def to_json(self) -> str:
        """The settings as stored."""
        return json.dumps(
            {
                "columns": list(self.columns),
                "keys": list(self.keys),
                "shape": self.shape,
                "column_policies": self.column_policies,
                "series": self.series,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """Settings read back from ``erpsync_table``."""
        data = json.loads(text)
        return cls(
            columns=tuple(data["columns"]),
            keys=tuple(data["keys"]),
            shape=data["shape"],
            column_policies=dict(data.get("column_policies", {})),
            series=dict(data.get("series", {})),
        )


@dataclass
class SyncTable:
    """A synced table with its reflected definition and its two metadata tables."""

    number: int
    name: str
    policy: str
    settings: Settings
    app: Table
    keys: tuple[SyncColumn, ...]
    columns: tuple[SyncColumn, ...]
    uniques: tuple[tuple[str, ...], ...]
    shadow: Table
    log: Table
    parents: dict[str, SyncTable] = field(default_factory=dict, repr=False)
    """The synced surrogate-key tables its reference columns point to, by name."""
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {c.key: i for i, c in enumerate(self.columns)}

    @property
    def key(self) -> str:
        """The table's name in lower case."""
        return self.name.lower()

    @property
    def surrogate(self) -> bool:
        """Whether the primary key is one integer column of its own (local ids, global ids between
        nodes), not a reference to another table's rows."""
        return is_surrogate(self.settings.shape)

    @property
    def self_refs(self) -> list[int]:
        """Slots of the columns referencing a row of this same table (a tree), by local id or
        by natural key: a batch writes a parent before the rows that point to it."""
        refs = self.settings.shape.get("refs", {})
        return [i for i, c in enumerate(self.columns) if refs.get(c.key) == self.key]

    @property
    def key_refs(self) -> list[tuple[int, SyncTable]]:
        """(position, referenced table) of the key columns that hold another synced row's local id."""
        return [(i, self.parents[k.ref]) for i, k in enumerate(self.keys) if k.ref is not None]

    def index(self, column_key: str) -> int:
        """The clock slot of a column."""
        return self._index[column_key]

    def column(self, column_key: str) -> SyncColumn:
        """A non-key column by its lower-case name."""
        return self.columns[self._index[column_key]]

    def policy_of(self, column_key: str) -> str:
        """The policy of one column: its override, else the table's."""
        return self.settings.column_policies.get(column_key, self.policy)


def table_shape(
    conn: Connection, dialect: Dialect, name: str, synced: dict[str, str]
) -> tuple[dict[str, Any], list[ReflectedColumn], list[str]]:
    """The engine-independent shape of table ``name``: what the schema fingerprint covers.

    Returns the shape, the reflected columns and the primary key (stored names).
    ``synced`` maps the lower-case names of all synced tables to stored names.
    """
    inspector = inspect(conn)
    columns = inspector.get_columns(name)
    pk = list(inspector.get_pk_constraint(name)["constrained_columns"])
    if not pk:
        raise NoPrimaryKey(
            "table {table} has no primary key, so its rows cannot be told apart between nodes",
            "add a primary key to it, or leave it out with --exclude {table}",
            table=name,
        )
    refs: dict[str, str] = {}
    parents: set[str] = set()
    for fk in inspector.get_foreign_keys(name):
        parent = str(fk["referred_table"]).lower()
        if parent in synced:
            parents.add(parent)
            if len(fk["constrained_columns"]) == 1:
                refs[fk["constrained_columns"][0].lower()] = parent
    shape: dict[str, Any] = {
        "columns": {
            c["name"].lower(): f"{type_signature(c['type'])} {'NULL' if c['nullable'] else 'NOT NULL'}"
            for c in columns
            if c["name"] not in pk
        },
        "key": [f"{k.lower()} {type_signature(_type_of(columns, k))}" for k in pk],
        "refs": refs,
        "parents": sorted(parents),
        "unique": sorted(
            ",".join(c.lower() for c in u) for u in dialect.unique_keys(conn, name) if list(u) != pk
        ),
    }
    return shape, columns, pk


def _type_of(columns: Sequence[ReflectedColumn], name: str) -> TypeEngine[Any]:
    return next(c["type"] for c in columns if c["name"] == name)


def fingerprint(shapes: dict[str, dict[str, Any]]) -> str:
    """A digest of the shapes of all synced tables, equal on two nodes whose schemas agree."""
    text = json.dumps(shapes, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def catalog_digest(conn: Connection, dialect: Dialect, names: Sequence[str]) -> str:
    """A cheap digest of the catalog rows of ``names``: it changes when their shape does."""
    rows = dialect.catalog_rows(conn, list(names))
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:32]


def load_table(
    conn: Connection,
    dialect: Dialect,
    md: MetaData,
    number: int,
    name: str,
    policy: str,
    settings: Settings,
    surrogates: set[str] | None = None,
) -> SyncTable:
    """A synced table, reflected from ``conn``, with its metadata tables.

    Only references to ``surrogates`` (tables with local ids, see ``local_keys``) are
    translated through global ids; any other natural key means the same row on every node.
    """
    app = dialect.reflect_table(conn, md, name)
    by_key = {c.name.lower(): c for c in app.columns}
    refs = {
        column: parent
        for column, parent in settings.shape.get("refs", {}).items()
        if surrogates is None or parent in surrogates
    }

    def column(key: str) -> SyncColumn:
        c = by_key[key]
        return SyncColumn(c.name, key, c.type, bool(c.nullable), refs.get(key))

    keys = tuple(column(k) for k in settings.keys)
    columns = tuple(column(k) for k in settings.columns)
    uniques = tuple(tuple(u.split(",")) for u in settings.shape.get("unique", []))
    key_types = [c.type for c in keys]
    return SyncTable(
        number=number,
        name=name,
        policy=policy,
        settings=settings,
        app=app,
        keys=keys,
        columns=columns,
        uniques=uniques,
        shadow=shadow_table(dialect, md, number, key_types, len(columns)),
        log=log_table(dialect, md, number, key_types),
    )


def is_surrogate(shape: dict[str, Any]) -> bool:
    """Whether a stored shape has a primary key of one integer column referencing no synced table."""
    key = shape.get("key", [])
    return (
        len(key) == 1
        and str(key[0]).endswith(" INTEGER")
        and str(key[0]).split()[0] not in shape.get("refs", {})
    )


def local_keys(shapes: dict[str, dict[str, Any]]) -> set[str]:
    """The synced tables whose key values may differ from node to node.

    Surrogate keys, and keys with a column referencing such a table (their
    references travel as global ids, keys included).
    """
    out = {name for name, shape in shapes.items() if is_surrogate(shape)}
    grown = True
    while grown:
        grown = False
        for name, shape in shapes.items():
            refs = shape.get("refs", {})
            keys = [str(k).split()[0] for k in shape.get("key", [])]
            if name not in out and any(refs.get(k) in out for k in keys):
                out.add(name)
                grown = True
    return out


def link(tables: Sequence[SyncTable]) -> None:
    """Point each table's reference columns (keys included) at the synced tables they reference."""
    by_key = {t.key: t for t in tables}
    for table in tables:
        table.parents = {c.ref: by_key[c.ref] for c in (*table.keys, *table.columns) if c.ref in by_key}


def parents_first(tables: Sequence[SyncTable]) -> list[SyncTable]:
    """The tables ordered so that every referenced table comes before those referring to it."""
    by_key = {t.key: t for t in tables}
    order = dependency_order({t.key: parents_of(t.settings.shape) for t in tables})
    return [by_key[key] for key in order]


def parents_of(shape: dict[str, Any]) -> set[str]:
    """The synced tables a table references (by any foreign key), from its stored shape."""
    return set(shape.get("refs", {}).values()) | set(shape.get("parents", []))


def dependency_order(refs: dict[str, set[str]]) -> list[str]:
    """Table names, each after the tables it references (``refs``: name → referenced names).

    Ties, and tables in a reference cycle, are ordered by name, so every node
    computes the same order.
    """
    pending = sorted(refs)
    done: list[str] = []
    placed: set[str] = set()
    while pending:
        for key in pending:
            if {r for r in refs[key] if r != key and r in refs} <= placed:
                break
        else:
            key = pending[0]  # a cycle: break it at the first name
        pending.remove(key)
        done.append(key)
        placed.add(key)
    return done
