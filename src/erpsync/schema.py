"""The reference ERP schema of the spec (seed 002), created and checked on any engine.

Names are the spec's exactly. On PostgreSQL they are stored folded to lower
case, unquoted, so that the spec's SQL (``SELECT NumProjet FROM tb_Projet``)
works in psql as written; column *keys* keep the spec's spelling so Python code
reads ``tables["tb_Projet"].c.NumProjet`` on every engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.engine.reflection import Inspector
from sqlalchemy.sql import sqltypes
from sqlalchemy.types import TypeEngine

from erpsync.db import Database
from erpsync.dialects import Dialect
from erpsync.errors import SchemaMismatch, SchemaMissing
from erpsync.i18n import tr

# Parents before children: the order tables are created, filled and summarised in.
ERP_TABLES = (
    "tb_Utilisateur",
    "tb_Projet",
    "tb_Version",
    "tb_Client",
    "tb_Commande",
    "tb_LigneCommande",
    "tb_Logs",
    "tb_Numerotation",
)

# (table, columns): column = (name, type, options)
_ColumnSpec = tuple[str, TypeEngine[Any], dict[str, object]]
_SPEC: dict[str, list[_ColumnSpec]] = {
    "tb_Utilisateur": [
        ("id", Integer(), {"primary_key": True}),
        ("Login", String(50), {"nullable": False, "unique": True}),
        ("Nom", String(100), {"nullable": False}),
        ("Prenom", String(100), {}),
        ("Email", String(100), {}),
    ],
    "tb_Projet": [
        ("id", Integer(), {"primary_key": True}),
        ("NumProjet", String(20), {"nullable": False, "unique": True}),
        ("Libelle", String(200), {"nullable": False}),
        ("fkCreateur", Integer(), {"fk": "tb_Utilisateur"}),
        ("DateCreation", DateTime(), {"nullable": False}),
    ],
    "tb_Version": [
        ("id", Integer(), {"primary_key": True}),
        ("fkProjet", Integer(), {"fk": "tb_Projet", "nullable": False}),
        ("NumVersion", String(20), {"nullable": False}),
        ("Libelle", String(200), {}),
        ("DateCreation", DateTime(), {"nullable": False}),
    ],
    "tb_Client": [
        ("id", Integer(), {"primary_key": True}),
        ("fkVersion", Integer(), {"fk": "tb_Version", "nullable": False}),
        ("Code", String(20), {"nullable": False, "unique": True}),
        ("RaisonSociale", String(200), {"nullable": False}),
        ("Email", String(100), {}),
        ("Telephone", String(20), {}),
    ],
    "tb_Commande": [
        ("id", Integer(), {"primary_key": True}),
        ("fkClient", Integer(), {"fk": "tb_Client", "nullable": False}),
        ("NumCommande", String(20), {"nullable": False, "unique": True}),
        ("DateCommande", Date(), {"nullable": False}),
        ("Statut", String(20), {"nullable": False}),
        ("MontantHT", Numeric(15, 2), {"nullable": False}),
    ],
    "tb_LigneCommande": [
        ("id", Integer(), {"primary_key": True}),
        ("fkCommande", Integer(), {"fk": "tb_Commande", "nullable": False}),
        ("NumLigne", Integer(), {"nullable": False}),
        ("Reference", String(50), {}),
        ("Designation", String(200), {"nullable": False}),
        ("Quantite", Numeric(10, 2), {"nullable": False}),
        ("PrixUnitaire", Numeric(15, 2), {"nullable": False}),
    ],
    # The journal of SP_LogOperation(operation, table, source id, new id, message, success, user).
    "tb_Logs": [
        ("id", Integer(), {"primary_key": True}),
        ("DateLog", DateTime(), {"nullable": False}),
        ("Operation", String(50), {"nullable": False}),
        ("TableCible", String(64), {}),
        ("IdSource", Integer(), {}),
        ("IdNouveau", Integer(), {}),
        ("Message", String(1000), {}),
        ("Succes", SmallInteger(), {"nullable": False}),
        ("Utilisateur", String(50), {}),
    ],
    # The counters of SP_GenererNumero: one row per number type and year (0 = no year).
    "tb_Numerotation": [
        ("TypeNumero", String(20), {"primary_key": True, "autoincrement": False}),
        ("Annee", Integer(), {"primary_key": True, "autoincrement": False}),
        ("DernierNumero", Integer(), {"nullable": False}),
    ],
}


@dataclass(frozen=True)
class ErpTables:
    """The reference tables for one engine, looked up by the spec's names."""

    metadata: MetaData
    tables: Mapping[str, Table]

    def __getitem__(self, name: str) -> Table:
        return self.tables[name]


@cache
def erp_tables(dialect: Dialect) -> ErpTables:
    """The reference schema as SQLAlchemy tables, with names as ``dialect`` stores them.

    Built once per engine kind: applying a batch looks tables up here, and building
    them costs milliseconds. Read-only for callers.
    """
    fold = dialect.fold
    metadata = MetaData()
    tables: dict[str, Table] = {}
    for table_name in ERP_TABLES:
        columns: list[Column[object]] = []
        extras: list[Index | UniqueConstraint] = []
        for col_name, col_type, options in _SPEC[table_name]:
            opts = dict(options)
            fk = opts.pop("fk", None)
            unique = opts.pop("unique", False)
            args = [ForeignKey(f"{fold(str(fk))}.id", name=fold(f"fk_{table_name}_{col_name}"))] if fk else []
            column: Column[object] = Column(fold(col_name), col_type, *args, key=col_name, **opts)  # type: ignore[arg-type]
            columns.append(column)
            if fk:
                extras.append(Index(fold(f"ix_{table_name}_{col_name}"), column))
            if unique:
                extras.append(UniqueConstraint(column, name=fold(f"uq_{table_name}_{col_name}")))
        tables[table_name] = Table(fold(table_name), metadata, *columns, *extras, **dialect.table_options())
    return ErpTables(metadata, tables)


@dataclass(frozen=True)
class InitResult:
    """What ``init_schema`` did: the tables it created and those already in place."""

    created: tuple[str, ...]
    existing: tuple[str, ...]


def reflect_application(conn: Connection) -> MetaData:
    """Every table of the database except erpsync's own (``erpsync_*``), reflected."""
    metadata = MetaData()
    metadata.reflect(conn, only=lambda name, _: not name.lower().startswith("erpsync_"))
    return metadata


def init_schema(db: Database) -> InitResult:
    """Create the reference schema, or check the one in place.

    Tables already there must have the expected shape; if one does not, nothing
    is created and ``SchemaMismatch`` names the differences. Missing tables are
    created in one transaction.
    """
    schema = erp_tables(db.dialect)
    present = _check_present(db, schema)
    missing = [name for name in ERP_TABLES if name not in present]
    if missing:
        with db.begin() as conn:
            schema.metadata.create_all(conn, tables=[schema[name] for name in missing])
    return InitResult(created=tuple(missing), existing=tuple(n for n in ERP_TABLES if n in present))


def require_schema(db: Database) -> ErpTables:
    """The reference tables, after checking they are all there with the expected shape."""
    schema = erp_tables(db.dialect)
    present = _check_present(db, schema)
    missing = [name for name in ERP_TABLES if name not in present]
    if missing:
        raise SchemaMissing(
            "the ERP schema is missing tables: {tables}",
            "create them with: erpsync db init {url}",
            tables=", ".join(missing),
            url=db.name,
        )
    return schema


@dataclass(frozen=True)
class Difference:
    """One way an existing table differs from the reference."""

    table: str
    text: str


def _check_present(db: Database, schema: ErpTables) -> dict[str, str]:
    """The reference tables present (spec name → stored name), all of the expected shape.

    Names are compared case-insensitively (PostgreSQL folds them, and so does
    MariaDB on Windows servers). Raises ``SchemaMismatch`` naming every difference.
    """
    with db.connect() as conn:
        inspector = inspect(conn)
        stored = {name.lower(): name for name in inspector.get_table_names()}
        present = {spec: stored[spec.lower()] for spec in schema.tables if spec.lower() in stored}
        differences = [
            difference
            for spec, name in present.items()
            for difference in _table_differences(inspector, schema[spec], spec, name)
        ]
    if differences:
        raise SchemaMismatch(
            "the database already holds {tables} with another shape: {differences}",
            "use an empty database, or rename or drop these tables; nothing was changed",
            tables=", ".join(sorted({d.table for d in differences})),
            differences="; ".join(d.text for d in differences),
        )
    return present


def _table_differences(inspector: Inspector, expected_table: Table, spec: str, name: str) -> list[Difference]:
    out: list[Difference] = []

    def add(message: str, **params: object) -> None:
        out.append(Difference(spec, tr(message, table=spec, **params)))

    expected = {c.key.lower(): c for c in expected_table.columns}
    actual = {c["name"].lower(): c for c in inspector.get_columns(name)}
    for key, column in expected.items():
        found = actual.get(key)
        if found is None:
            add("{table}: missing column {column}", column=column.key)
            continue
        want, got = type_signature(column.type), type_signature(found["type"])
        if want != got:
            add(
                "{table}.{column} is {actual}, expected {expected}",
                column=column.key,
                actual=got,
                expected=want,
            )
        if not column.primary_key and column.nullable != found["nullable"]:
            add(
                "{table}.{column} may be NULL, expected NOT NULL"
                if found["nullable"]
                else "{table}.{column} is NOT NULL, expected NULL allowed",
                column=column.key,
            )
    for key, found in actual.items():
        if key not in expected:
            add("{table}: unexpected column {column}", column=found["name"])
    want_pk = [c.key.lower() for c in expected_table.primary_key.columns]
    got_pk = [c.lower() for c in inspector.get_pk_constraint(name)["constrained_columns"]]
    if want_pk != got_pk:
        add(
            "{table}: primary key is ({actual}), expected ({expected})",
            actual=", ".join(got_pk),
            expected=", ".join(want_pk),
        )
    return out


_FAMILIES: tuple[tuple[type[TypeEngine[Any]], Callable[[Any], str]], ...] = (
    (sqltypes.Boolean, lambda t: "INTEGER"),  # MariaDB's BOOLEAN is a TINYINT
    (sqltypes._Binary, lambda t: "BINARY"),  # BLOB, BYTEA, VARBINARY: bytes
    (sqltypes.Integer, lambda t: "INTEGER"),
    (sqltypes.Float, lambda t: "FLOAT"),
    (sqltypes.Numeric, lambda t: f"DECIMAL({t.precision},{t.scale})"),
    (sqltypes.DateTime, lambda t: "DATETIME"),
    (sqltypes.Date, lambda t: "DATE"),
    (sqltypes.String, lambda t: f"VARCHAR({t.length})" if t.length else "TEXT"),
)


def type_signature(column_type: TypeEngine[Any]) -> str:
    """A type as compared across engines: INTEGER covers every integer width, etc."""
    for family, render in _FAMILIES:
        if isinstance(column_type, family):
            return render(column_type)
    return type(column_type).__name__.upper()
