"""Making a database a sync node, opening one, and removing everything sync added.

``init_node`` creates erpsync's metadata tables, installs the capture triggers
on each synced table and registers the rows already there, in bulk: one
``INSERT … SELECT`` per surrogate-key table gives every row a global id. Run
again, it adds what is missing and changes nothing else. ``uninstall_node``
drops the triggers and erpsync's sync tables, and nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from sqlalchemy import (
    Connection,
    MetaData,
    Table,
    bindparam,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)

from erpsync.db import Database
from erpsync.errors import ErpSyncError, InvalidArgument
from erpsync.sync import meta
from erpsync.sync.hlc import tick
from erpsync.sync.model import (
    Settings,
    SyncTable,
    UnknownTable,
    catalog_digest,
    fingerprint,
    link,
    load_table,
    local_keys,
    parents_first,
    table_shape,
)
from erpsync.sync.policies import LWW

VERSION = 4
"""Version of erpsync's tables in a node: 2 added the sync history and undo receipts,
3 the PostgreSQL capture functions without JIT, 4 the global ids of keys referencing other rows
and the type families of booleans and binary columns in the schema fingerprint."""
SELF = 1
"""The number of this node in its own ``erpsync_peer`` table."""

DEFAULT_EXCLUDE = ("tb_numerotation",)
"""Tables left out unless named: the numbering counters are each node's own series."""

DEFAULT_SERIES: dict[str, dict[str, str]] = {
    "tb_projet": {"numprojet": "PROJET"},
    "tb_client": {"code": "CLIENT"},
    "tb_commande": {"numcommande": "COMMANDE"},
}
"""Business keys renumbered from a numbering series when two nodes created the same one."""


class NotANode(ErpSyncError):
    """The database has not been made a sync node."""


class SchemaChanged(ErpSyncError):
    """A synced table's shape changed since ``node init``."""


@dataclass
class NodeState:
    """The node's counters, locked and updated inside a write transaction."""

    hlc: int
    seq: int
    gids: int

    def next_seq(self) -> int:
        """A new change sequence number."""
        self.seq += 1
        return self.seq

    def next_seqs(self, count: int) -> range:
        """``count`` new change sequence numbers, in order."""
        self.seq += count
        return range(self.seq - count + 1, self.seq + 1)

    def stamp(self) -> int:
        """A new local clock value."""
        self.hlc = tick(self.hlc)
        return self.hlc

    def see(self, clock: int) -> None:
        """Take a received clock into account (a later local write will order after it)."""
        if clock > self.hlc:
            self.hlc = clock


class Node:
    """A database that is a sync node: its identity, its synced tables and counters."""

    def __init__(self, db: Database, conn: Connection | None = None) -> None:
        self.db = db
        self.dialect = db.dialect
        self.meta = meta.fixed_tables(db.dialect)
        self._md = MetaData()
        self._tables: list[SyncTable] | None = None
        self._peers: dict[str, int] = {}
        self.version = VERSION
        if conn is None:
            with db.connect() as c:
                self._load(c)
            self._upgrade()
        else:
            self._load(conn)

    def _upgrade(self) -> None:
        """Bring a node made by an older erpsync up to date (see ``upgrade``)."""
        if self.version < VERSION:
            upgrade(self.db, self.version)
            with self.db.connect() as conn:  # what the upgrade stored (shapes, fingerprint)
                self._load(conn)

    def _load(self, conn: Connection) -> None:
        if not inspect(conn).has_table(meta.NODE):
            raise NotANode(
                "{db} is not a sync node",
                "make it one with: erpsync node init {db} --name NAME",
                db=self.db.name,
            )
        node = self.meta[meta.NODE]
        row = conn.execute(select(node)).one()
        self.node_id: str = row.node_id
        self.name: str = row.name
        self.fingerprint: str = row.fingerprint
        self.digest: str = row.digest
        self.version = int(row.version)
        tables = self.meta[meta.TABLES]
        self.rows = [
            (r.no, r.name, r.policy, Settings.from_json(r.settings))
            for r in conn.execute(select(tables).order_by(tables.c.no))
        ]

    @property
    def prefix(self) -> str:
        """The first half of every global id this node gives: 16 hex digits of its id."""
        return self.node_id.replace("-", "")[:16]

    def shapes(self) -> dict[str, dict[str, object]]:
        """The stored shape of each synced table (what the fingerprint covers)."""
        return {name.lower(): settings.shape for _, name, _, settings in self.rows}

    def tables(self, conn: Connection | None = None) -> list[SyncTable]:
        """The synced tables, reflected once, parents before children."""
        if self._tables is None:
            if conn is None:
                with self.db.connect() as c:
                    return self.tables(c)
            translated = local_keys(self.shapes())
            loaded = [
                load_table(conn, self.dialect, self._md, no, name, policy, settings, translated)
                for no, name, policy, settings in self.rows
            ]
            link(loaded)
            self._tables = parents_first(loaded)
        return self._tables

    def table(self, key: str, conn: Connection | None = None) -> SyncTable:
        """A synced table by name (any case)."""
        for table in self.tables(conn):
            if table.key == key.lower():
                return table
        raise UnknownTable(
            "table {table} is not synced by {db}",
            "list the synced tables with: erpsync node status {db}",
            table=key,
            db=self.db.name,
        )

    def check_schema(self, conn: Connection) -> None:
        """Fail if a synced table changed shape since ``node init`` (cheap catalog digest)."""
        names = [name for _, name, _, _ in self.rows]
        if names and catalog_digest(conn, self.dialect, names) != self.digest:
            raise SchemaChanged(
                "the shape of the synced tables of {db} changed since it became a node",
                "run erpsync node init {db} again to update the triggers and the fingerprint",
                db=self.db.name,
            )

    # -- counters and peers ------------------------------------------------------------------

    def lock(self, conn: Connection) -> NodeState:
        """Lock the node row until commit (serializes sync's writers) and read the counters."""
        node = self.meta[meta.NODE]
        conn.execute(update(node).values(hlc=node.c.hlc))
        row = conn.execute(select(node.c.hlc, node.c.seq, node.c.gids)).one()
        return NodeState(int(row.hlc), int(row.seq), int(row.gids))

    def save(self, conn: Connection, state: NodeState) -> None:
        """Store the counters changed inside the transaction."""
        conn.execute(update(self.meta[meta.NODE]).values(hlc=state.hlc, seq=state.seq, gids=state.gids))

    def peer_number(self, conn: Connection, node_id: str, name: str | None = None) -> int:
        """The local number of node ``node_id`` in clocks, registering it the first time.

        A number registered is remembered from the next call on: the transaction that
        registers it may still be rolled back (a batch waiting for rows it references).
        """
        if node_id in self._peers:
            return self._peers[node_id]
        peers = self.meta[meta.PEERS]
        found = conn.execute(select(peers.c.no).where(peers.c.node_id == node_id)).scalar()
        if found is not None:
            self._peers[node_id] = int(found)
            return int(found)
        last = conn.execute(select(peers.c.no).order_by(peers.c.no.desc()).limit(1)).scalar()
        number = int(last or 0) + 1
        conn.execute(insert(peers).values(no=number, node_id=node_id, name=name))
        return number

    def peer_ids(self, conn: Connection) -> dict[int, str]:
        """Every known node id by local number."""
        peers = self.meta[meta.PEERS]
        return {int(r.no): r.node_id for r in conn.execute(select(peers.c.no, peers.c.node_id))}

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction for sync's own work (READ COMMITTED on the servers).

        READ COMMITTED lets a transaction see the log rows that writers committed
        after it began, which the check for concurrent edits relies on. On SQLite
        the transaction takes the write lock at once (``write``: BEGIN IMMEDIATE).
        """
        with self.db.translate_errors(), self.db.engine.connect() as conn:
            conn = conn.execution_options(write=True)
            if self.dialect.is_server:
                conn = conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                yield conn


# -- init and uninstall ----------------------------------------------------------------------


@dataclass
class InitReport:
    """What ``init_node`` did."""

    node_id: str
    name: str
    created: bool
    registered: dict[str, int] = field(default_factory=dict)
    """Rows given a global id now, per synced table."""
    removed: list[str] = field(default_factory=list)
    """Tables no longer synced (their triggers and metadata were dropped)."""
    skipped: list[str] = field(default_factory=list)
    """Tables left out because they have no primary key."""


def choose_tables(
    conn: Connection, tables: Sequence[str] | None, exclude: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The tables to sync (stored names) and those skipped for lack of a primary key."""
    inspector = inspect(conn)
    stored = {n.lower(): n for n in inspector.get_table_names() if not n.lower().startswith(meta.PREFIX)}
    wanted = [t.lower() for t in tables] if tables else None
    excluded = {t.lower() for t in exclude}
    for name in [*(wanted or []), *excluded]:
        if name not in stored:
            raise UnknownTable(
                "there is no table {table} in {db}",
                "check the name; the tables are: {tables}",
                table=name,
                db=conn.engine.url.render_as_string(hide_password=True),
                tables=", ".join(sorted(stored.values())),
            )
    chosen, skipped = [], []
    for key in wanted or sorted(stored):
        if key in excluded or (wanted is None and key in DEFAULT_EXCLUDE):
            continue
        if wanted is None and not inspector.get_pk_constraint(stored[key])["constrained_columns"]:
            skipped.append(stored[key])
            continue
        chosen.append(stored[key])
    return chosen, skipped


def init_node(
    db: Database,
    name: str | None,
    tables: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    *,
    register: bool = True,
) -> InitReport:
    """Make ``db`` a sync node named ``name``, or bring an existing node up to date.

    ``register=False`` leaves existing rows without global ids (adoption gives
    them the peer's). On MariaDB, DDL commits by itself: a failure half-way
    leaves what was created, and running init again completes it.
    """
    from erpsync.sync.capture import fold

    with db.begin() as conn:
        chosen, skipped = choose_tables(conn, tables, exclude)
        fixed = meta.fixed_tables(db.dialect)
        for fixed_table in fixed.values():
            fixed_table.create(conn, checkfirst=True)
        node_t = fixed[meta.NODE]
        existing = conn.execute(select(node_t)).first()
        created = existing is None
        if name is None and existing is None:
            raise InvalidArgument(
                "a new node needs a name",
                "add --name, e.g. --name PC-ACCUEIL",
            )
        if name is None:
            assert existing is not None
            name = str(existing.name)
        node_id = str(uuid.uuid4()) if existing is None else existing.node_id
        if existing is None:
            values = {"hlc": 0, "seq": 0, "gids": 0, "fingerprint": "", "digest": "", "version": VERSION}
            conn.execute(insert(node_t).values(id=1, node_id=node_id, name=name, **values))
            conn.execute(insert(fixed[meta.PEERS]).values(no=SELF, node_id=node_id, name=name))
        else:
            conn.execute(update(node_t).values(name=name, version=VERSION))
        report = InitReport(node_id, name, created, skipped=skipped)
        _set_tables(conn, db, fixed, chosen, report)
        node = Node(db, conn)
        state = node.lock(conn)
        state.stamp()
        fold(node, conn, state)
        if register:
            for table in node.tables(conn):
                report.registered[table.name] = register_rows(node, conn, table, state)
        node.save(conn, state)
    return report


def upgrade(db: Database, version: int) -> None:
    """Bring a node of ``version``, made by an older erpsync, up to date.

    Creates the metadata tables it lacks and updates its triggers in place.
    Done when a node is opened, so a PC updated in place keeps syncing (and
    ``node init`` does the same). Creating a table is harmless if a concurrent
    opening created it first; the triggers are updated by the opening that
    moves the version (altering a function twice at once fails on PostgreSQL).
    """
    for table in meta.fixed_tables(db.dialect).values():
        try:
            with db.begin() as conn:
                table.create(conn, checkfirst=True)
        except ErpSyncError:
            with db.connect() as conn:
                if not inspect(conn).has_table(table.name):
                    raise
    with db.begin() as conn:  # the node row's lock: of two openings, only the first upgrades the triggers
        node_t = meta.fixed_tables(db.dialect)[meta.NODE]
        bumped = conn.execute(update(node_t).where(node_t.c.version < VERSION).values(version=VERSION))
        if bumped.rowcount and version < 3:
            db.dialect.upgrade_capture(conn)
        if bumped.rowcount and version < 4:
            node = Node(db, conn)
            _refresh_shapes(node, conn)
            _rederive_natural_gids(node, conn)


def _refresh_shapes(node: Node, conn: Connection) -> None:
    """Store the shapes (and fingerprint) this version gives an unchanged schema: since version 4
    booleans count as integers and every binary type as one, as the engines reflect them. A
    schema changed since ``node init`` is left to it (sync refuses to run until then)."""
    names = [name for _, name, _, _ in node.rows]
    if catalog_digest(conn, node.dialect, names) != node.digest:
        return
    tables_t = node.meta[meta.TABLES]
    synced = {name.lower(): name for name in names}
    shapes = {}
    for number, name, _, settings in node.rows:
        shape = table_shape(conn, node.dialect, name, synced)[0]
        shapes[name.lower()] = shape
        if shape != settings.shape:
            fresh = replace(settings, shape=shape).to_json()
            conn.execute(update(tables_t).where(tables_t.c.no == number).values(settings=fresh))
    conn.execute(update(node.meta[meta.NODE]).values(fingerprint=fingerprint(shapes)))


def _rederive_natural_gids(node: Node, conn: Connection) -> None:
    """Give the rows of tables keyed by references to other rows the global ids derived from
    those rows' global ids (before version 4, from their local ids, which differ by node)."""
    from erpsync.sync.capture import natural_gids

    for table in node.tables(conn):
        if table.surrogate or not table.key_refs:
            continue
        s = table.shadow
        columns = [s.c[f"k{i}"] for i in range(len(table.keys))]
        found = {tuple(r[1:]): r[0] for r in conn.execute(select(s.c.gid, *columns).where(s.c.deleted == 0))}
        moved = [
            {"old": found[key], "new": gid}
            for key, gid in natural_gids(conn, table, list(found)).items()
            if gid != found[key]
        ]
        if moved:
            conn.execute(update(s).where(s.c.gid == bindparam("old")).values(gid=bindparam("new")), moved)


def _set_tables(
    conn: Connection, db: Database, fixed: dict[str, Table], chosen: list[str], report: InitReport
) -> None:
    """Record the chosen tables, create their metadata tables and triggers, drop the others'."""
    tables_t = fixed[meta.TABLES]
    known = {r.name.lower(): r for r in conn.execute(select(tables_t))}
    synced = {n.lower(): n for n in chosen}
    shapes = {}
    for name in chosen:
        shape, columns, pk = table_shape(conn, db.dialect, name, synced)
        shapes[name.lower()] = shape
        row = known.get(name.lower())
        if row is not None:
            old = Settings.from_json(row.settings)
            order = list(old.columns) + [
                c["name"].lower()
                for c in columns
                if c["name"] not in pk and c["name"].lower() not in old.columns
            ]
            settings = Settings(tuple(order), old.keys, shape, old.column_policies, old.series)
            conn.execute(
                update(tables_t).where(tables_t.c.no == row.no).values(name=name, settings=settings.to_json())
            )
            number = int(row.no)
        else:
            number = max([int(r.no) for r in known.values()] + [0]) + 1
            settings = Settings(
                columns=tuple(c["name"].lower() for c in columns if c["name"] not in pk),
                keys=tuple(k.lower() for k in pk),
                shape=shape,
                series=DEFAULT_SERIES.get(name.lower(), {}),
            )
            conn.execute(
                insert(tables_t).values(no=number, name=name, policy=LWW, settings=settings.to_json())
            )
            known[name.lower()] = conn.execute(select(tables_t).where(tables_t.c.no == number)).one()
        _install_table(conn, db, number, name, settings)
    for key, row in list(known.items()):
        if key not in synced:
            _remove_table(conn, db, int(row.no), row.name)
            conn.execute(delete(tables_t).where(tables_t.c.no == row.no))
            conn.execute(delete(fixed[meta.CURSORS]).where(fixed[meta.CURSORS].c.tbl == row.no))
            report.removed.append(row.name)
    conn.execute(
        update(fixed[meta.NODE]).values(
            fingerprint=fingerprint(shapes), digest=catalog_digest(conn, db.dialect, chosen)
        )
    )


def _install_table(conn: Connection, db: Database, number: int, name: str, settings: Settings) -> None:
    md = MetaData()
    table = load_table(conn, db.dialect, md, number, name, LWW, settings)
    existing = {n.lower() for n in inspect(conn).get_table_names()}
    if table.shadow.name in existing:
        present = {c["name"] for c in inspect(conn).get_columns(table.shadow.name)}
        for column in table.shadow.columns:
            if column.name not in present:  # a column added to the application table since
                type_ = column.type.compile(conn.dialect)
                conn.exec_driver_sql(
                    f"ALTER TABLE {db.quote(table.shadow.name)} ADD {db.quote(column.name)} {type_}"
                )
        db.dialect.match_collations(conn, table.shadow)
    else:
        table.shadow.create(conn)
    if table.log.name in existing:
        db.dialect.match_collations(conn, table.log)
    else:
        table.log.create(conn)
    db.dialect.install_capture(
        conn,
        number,
        name,
        [k.name for k in table.keys],
        [(c.name, c.text) for c in table.columns],
    )


def _remove_table(conn: Connection, db: Database, number: int, name: str) -> None:
    if inspect(conn).has_table(name):
        db.dialect.remove_capture(conn, number, name)
    for metadata_table in (meta.shadow_name(number), meta.log_name(number)):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {db.quote(metadata_table)}")


def register_rows(node: Node, conn: Connection, table: SyncTable, state: NodeState) -> int:
    """Give a global id to every row of ``table`` that has none yet; return how many.

    Surrogate keys: one set-based ``INSERT … SELECT`` numbering the rows after
    the node's global-id counter. Natural keys: the id is derived from the key
    (``capture.natural_gids``), so tables are registered parents first.
    """
    from erpsync.sync.capture import natural_gids

    q = node.db.quote
    pk = [q(k.name) for k in table.keys]
    shadow, app = q(table.shadow.name), q(table.app.name)
    missing = " AND ".join(f"r.k{i} = t.{k}" for i, k in enumerate(pk))
    if table.surrogate:
        gid = node.dialect.gid_sql(":prefix", "(:g0 + x.rn)")
        result = conn.execute(
            text(
                f"INSERT INTO {shadow} (gid, k0, seq, deleted, bh, bn) "
                f"SELECT {gid}, x.k, :s0 + x.rn, 0, :h, :me FROM ("
                f"SELECT t.{pk[0]} AS k, ROW_NUMBER() OVER (ORDER BY t.{pk[0]}) AS rn FROM {app} t "
                f"WHERE NOT EXISTS (SELECT 1 FROM {shadow} r WHERE {missing})) x"
            ),
            {"prefix": node.prefix, "g0": state.gids, "s0": state.seq, "h": state.hlc, "me": SELF},
        )
        count = int(result.rowcount)
        state.gids += count
        state.seq += count
        return count
    columns = ", ".join(f"t.{k}" for k in pk)
    typed = [table.app.c[k.name] for k in table.keys]  # a SQLite date is text until typed as its column
    keys = conn.execute(
        text(
            f"SELECT {columns} FROM {app} t WHERE NOT EXISTS (SELECT 1 FROM {shadow} r WHERE {missing})"
        ).columns(*typed)
    ).all()
    gids = natural_gids(conn, table, [tuple(key) for key in keys])
    rows = [{"gid": gid, **{f"k{i}": v for i, v in enumerate(key)}} for key, gid in gids.items()]
    for row in rows:
        row.update(seq=state.next_seq(), deleted=0, bh=state.hlc, bn=SELF)
    if rows:
        # a natural key deleted earlier comes back under the same global id
        gone = [r["gid"] for r in rows]
        conn.execute(delete(table.shadow).where(table.shadow.c.gid.in_(gone)))
        conn.execute(insert(table.shadow), rows)
    return len(rows)


def uninstall_node(db: Database) -> list[str]:
    """Remove the triggers and every sync table erpsync added; return the tables dropped.

    Application tables and their rows are left exactly as they are.
    """
    dropped: list[str] = []
    with db.begin() as conn:
        node = Node(db, conn)
        for number, name, _, _ in node.rows:
            _remove_table(conn, db, number, name)
            dropped += [meta.shadow_name(number), meta.log_name(number)]
        for table_name in meta.FIXED:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {db.quote(table_name)}")
            dropped.append(table_name)
    return dropped


# -- status and configuration ------------------------------------------------------------------------


@dataclass
class TableStatus:
    """One synced table as ``node status`` shows it."""

    name: str
    rows: int
    policy: str
    columns: dict[str, str]


@dataclass
class NodeStatus:
    """What ``node status`` shows."""

    node_id: str
    name: str
    tables: list[TableStatus]
    peers: list[tuple[str, str | None]]
    open_conflicts: int


def node_status(db: Database) -> NodeStatus:
    """The node's synced tables, peers and open conflicts."""
    node = Node(db)
    with db.connect() as conn:
        tables = []
        for number, name, policy, settings in node.rows:
            count = conn.execute(
                text(f"SELECT COUNT(*) FROM {db.quote(meta.shadow_name(number))} WHERE deleted = 0")
            ).scalar_one()
            tables.append(TableStatus(name, int(count), policy, dict(settings.column_policies)))
        peers_t = node.meta[meta.PEERS]
        peers = [
            (r.name or r.node_id, r.last_sync)
            for r in conn.execute(select(peers_t).where(peers_t.c.no != SELF).order_by(peers_t.c.no))
        ]
        conflicts_t = node.meta[meta.CONFLICTS]
        open_count = conn.execute(
            select(func.count()).select_from(conflicts_t).where(conflicts_t.c.status == "open")
        ).scalar_one()
    return NodeStatus(node.node_id, node.name, tables, peers, int(open_count))


def set_policy(db: Database, target: str, policy: str) -> None:
    """Configure the policy of a synced table (``tb_Client``) or column (``tb_Client.Email``)."""
    from erpsync.sync.policies import check_policy

    check_policy(policy)
    table_name, _, column = target.partition(".")
    node = Node(db)
    for number, name, _, settings in node.rows:
        if name.lower() != table_name.lower():
            continue
        tables_t = node.meta[meta.TABLES]
        with db.begin() as conn:
            if not column:
                conn.execute(update(tables_t).where(tables_t.c.no == number).values(policy=policy))
                return
            if column.lower() not in settings.columns:
                raise UnknownTable(
                    "there is no column {column} in {table}",
                    "the columns are: {columns}",
                    column=column,
                    table=name,
                    columns=", ".join(settings.columns),
                )
            settings.column_policies[column.lower()] = policy
            conn.execute(update(tables_t).where(tables_t.c.no == number).values(settings=settings.to_json()))
            return
    raise UnknownTable(
        "table {table} is not synced by {db}",
        "list the synced tables with: erpsync node status {db}",
        table=table_name,
        db=db.name,
    )
