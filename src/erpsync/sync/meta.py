"""erpsync's own tables in a node: who it is, what it syncs, what it has seen.

The application's tables are never altered. Everything sync needs lives in
tables whose names start with ``erpsync_``:

- ``erpsync_node``: the one row describing this node (id, name, clock, change counter);
- ``erpsync_table``: the synced tables, their number, policies and column order;
- ``erpsync_peer``: node ids seen in clocks, numbered locally (clocks store the number);
- ``erpsync_cursor``: per peer, table and stream, the peer's change sequence applied here;
- ``erpsync_batch``: ids of batches already applied (replaying one changes nothing);
- ``erpsync_conflict``: conflicts kept for a person, and automatic resolutions for the record;
- ``erpsync_sync``: the history of the syncs run here or applied here, and of their undos;
- ``erpsync_receipt``: per sync and batch, the before-images of the rows it changed (for undo);
- per synced table *n*: ``erpsync_r<n>`` (one row per row ever seen: global id, local key,
  per-column clocks, tombstone, change sequence) and ``erpsync_l<n>``, the log the
  triggers append keys to.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.mysql import LONGBLOB
from sqlalchemy.types import TypeEngine

from erpsync.dialects import Dialect

PREFIX = "erpsync_"
NODE = "erpsync_node"
TABLES = "erpsync_table"
PEERS = "erpsync_peer"
CURSORS = "erpsync_cursor"
BATCHES = "erpsync_batch"
CONFLICTS = "erpsync_conflict"
HISTORY = "erpsync_sync"
RECEIPTS = "erpsync_receipt"
FIXED = (NODE, TABLES, PEERS, CURSORS, BATCHES, CONFLICTS, HISTORY, RECEIPTS)

GID_LENGTH = 32
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid
_BLOB = LargeBinary().with_variant(LONGBLOB(), "mysql", "mariadb")  # MariaDB's BLOB stops at 64 KB
SYNC_ID_LENGTH = 32


def shadow_name(number: int) -> str:
    """The row-identity and clock table of synced table ``number``."""
    return f"erpsync_r{number}"


def log_name(number: int) -> str:
    """The capture log of synced table ``number``."""
    return f"erpsync_l{number}"


def fixed_tables(dialect: Dialect) -> dict[str, Table]:
    """The node-wide metadata tables, for ``dialect``."""
    md = MetaData()
    opts = dialect.table_options()
    gid = dialect.gid_type
    tables = [
        Table(
            NODE,
            md,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("node_id", String(36), nullable=False),
            Column("name", String(100), nullable=False),
            Column("hlc", BigInteger, nullable=False),
            Column("seq", BigInteger, nullable=False),
            Column("gids", BigInteger, nullable=False),
            Column("fingerprint", String(64), nullable=False),
            Column("digest", String(64), nullable=False),
            Column("version", Integer, nullable=False),
            **opts,
        ),
        Table(
            TABLES,
            md,
            Column("no", Integer, primary_key=True, autoincrement=False),
            Column("name", String(128), nullable=False),
            Column("policy", String(20), nullable=False),
            Column("settings", Text, nullable=False),
            **opts,
        ),
        Table(
            PEERS,
            md,
            Column("no", Integer, primary_key=True, autoincrement=False),
            Column("node_id", String(36), nullable=False, unique=True),
            Column("name", String(100)),
            Column("url", String(500)),
            Column("last_sync", String(40)),
            **opts,
        ),
        Table(
            CURSORS,
            md,
            Column("peer", Integer, primary_key=True, autoincrement=False),
            Column("tbl", Integer, primary_key=True, autoincrement=False),
            Column("stream", SmallInteger, primary_key=True, autoincrement=False),
            Column("seq", BigInteger, nullable=False),
            **opts,
        ),
        Table(
            BATCHES,
            md,
            Column("batch_id", String(200, collation=None), primary_key=True),
            Column("peer", Integer, nullable=False),
            Column("applied", BigInteger, nullable=False),
            Column("result", Text, nullable=False),
            **opts,
        ),
        Table(
            CONFLICTS,
            md,
            Column("id", _ID, primary_key=True, autoincrement=True),
            Column("tbl", Integer, nullable=False),
            Column("gid", gid(), nullable=False),
            Column("kind", String(20), nullable=False),
            Column("policy", String(20), nullable=False),
            Column("status", String(20), nullable=False),
            Column("peer", Integer),
            Column("detected", BigInteger, nullable=False),
            Column("resolved", BigInteger),
            Column("resolution", String(40)),
            Column("detail", Text, nullable=False),
            Index("ix_erpsync_conflict_open", "status", "tbl", "gid"),
            **opts,
        ),
        Table(
            HISTORY,
            md,
            Column("no", _ID, primary_key=True, autoincrement=True),
            Column("sync_id", String(SYNC_ID_LENGTH), nullable=False, unique=True),
            Column("peer", String(36)),
            Column("peer_name", String(200)),
            Column("direction", String(10), nullable=False),
            Column("started", BigInteger, nullable=False),
            Column("finished", BigInteger),
            Column("received", BigInteger, nullable=False),
            Column("sent", BigInteger, nullable=False),
            Column("changed", BigInteger, nullable=False),
            Column("conflicts", Integer, nullable=False),
            Column("result", String(10)),
            Column("message", Text),
            Column("backup", String(1000)),
            Column("undone_by", String(SYNC_ID_LENGTH)),
            Index("ix_erpsync_sync_started", "started"),
            **opts,
        ),
        Table(
            RECEIPTS,
            md,
            Column("no", _ID, primary_key=True, autoincrement=True),
            Column("sync_id", String(SYNC_ID_LENGTH), nullable=False),
            Column("tbl", Integer, nullable=False),
            Column("lo", BigInteger, nullable=False),
            Column("hi", BigInteger, nullable=False),
            Column("data", _BLOB, nullable=False),
            Index("ix_erpsync_receipt_sync", "sync_id"),
            **opts,
        ),
    ]
    return {t.name: t for t in tables}


def shadow_table(
    dialect: Dialect, md: MetaData, number: int, key_types: list[TypeEngine[Any]], columns: int
) -> Table:
    """``erpsync_r<n>``: one row per global id, keyed also by the local primary key.

    ``k0…`` hold the local key (NULL once deleted: a tombstone frees the key),
    ``bh``/``bn`` the clock of the row's first write (every column without a clock
    of its own), ``c<i>``/``n<i>`` the clock of column *i* when written since,
    ``dh``/``dn`` the largest delete seen and ``ds`` the largest write the deleting
    node had seen (to tell a concurrent update from an old one). ``seq`` orders
    changes for the per-peer cursors; ``src`` names the peer whose state the row
    holds entirely, so it is not echoed back to it. ``vv`` is the row's version
    vector (``node:clock,…`` by local node number) when it says more than the
    column clocks: the writes of other nodes the row's state has seen.
    """
    cols: list[Column[Any]] = [Column("gid", dialect.gid_type(), primary_key=True)]
    cols += [Column(f"k{i}", t, nullable=True) for i, t in enumerate(key_types)]
    cols += [
        Column("seq", BigInteger, nullable=False),
        Column("deleted", SmallInteger, nullable=False),
        Column("bh", BigInteger),
        Column("bn", Integer),
        Column("dh", BigInteger),
        Column("dn", Integer),
        Column("ds", BigInteger),
        Column("src", Integer),
        Column("vv", Text),
    ]
    for i in range(columns):
        cols += [Column(f"c{i}", BigInteger), Column(f"n{i}", Integer)]
    name = shadow_name(number)
    return Table(
        name,
        md,
        *cols,
        UniqueConstraint(*[f"k{i}" for i in range(len(key_types))], name=f"{name}_key"),
        Index(f"{name}_seq", "deleted", "seq"),
        **dialect.table_options(),
    )


def log_table(dialect: Dialect, md: MetaData, number: int, key_types: list[TypeEngine[Any]]) -> Table:
    """``erpsync_l<n>``: what the triggers append: the key, a column mask and the wall clock.

    ``m`` is the bit mask of the columns an UPDATE changed, ``-1`` for an INSERT
    (every column) and ``-2`` for a DELETE; ``w`` is the wall clock in milliseconds.
    """
    return Table(
        log_name(number),
        md,
        Column("seq", _ID, primary_key=True, autoincrement=True),
        Column("m", BigInteger, nullable=False),
        Column("w", BigInteger, nullable=False),
        *[Column(f"k{i}", t) for i, t in enumerate(key_types)],
        **dialect.table_options(),
    )
