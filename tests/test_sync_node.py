"""Making a database a node, capturing its writes, and removing everything sync added."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from erpsync.db import Database, open_database
from erpsync.fill import fill
from erpsync.schema import init_schema
from erpsync.sync.capture import fold
from erpsync.sync.node import VERSION, Node, init_node, uninstall_node


def app_tables(db: Database) -> list[str]:
    from sqlalchemy import inspect

    with db.connect() as conn:
        return sorted(inspect(conn).get_table_names())


def triggers(db: Database) -> list[str]:
    """Every trigger in the database, from the engine's own catalog."""
    sql = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
        "mariadb": "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()",
        "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal",
    }[db.dialect.name]
    with db.connect() as conn:
        return sorted(r[0] for r in conn.execute(text(sql)))


def contents(db: Database) -> dict[str, list[tuple[object, ...]]]:
    with db.connect() as conn:
        return {
            name: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {db.quote(name)} ORDER BY 1"))]
            for name in app_tables(db)
        }


def count(db: Database, sql: str) -> int:
    with db.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_init_registers_rows_rerun_is_safe_uninstall_restores(erp_db: Database) -> None:
    fill(erp_db, scale=1, seed=3)
    before_tables, before_rows = app_tables(erp_db), contents(erp_db)
    report = init_node(erp_db, "pc1")
    assert report.created
    node = Node(erp_db)
    synced = {t.key for t in node.tables()}
    assert "tb_numerotation" not in synced and "tb_lignecommande" in synced
    for table in node.tables():
        rows = count(erp_db, f"SELECT count(*) FROM {erp_db.quote(table.name)}")
        assert report.registered[table.name] == rows
        assert count(erp_db, f"SELECT count(DISTINCT gid) FROM {table.shadow.name}") == rows
    again = init_node(erp_db, "pc1")
    assert not again.created and again.node_id == report.node_id
    assert set(again.registered.values()) == {0}
    assert len(triggers(erp_db)) >= 3 * len(synced)
    uninstall_node(erp_db)
    assert app_tables(erp_db) == before_tables
    assert contents(erp_db) == before_rows
    assert triggers(erp_db) == []


def test_capture_of_inserts_updates_deletes(erp_db: Database) -> None:
    fill(erp_db, scale=1, seed=4)
    init_node(erp_db, "pc1")
    node = Node(erp_db)
    client = node.table("tb_Client")
    shadow = client.shadow.name
    email = client.index("email")
    with erp_db.begin() as conn:
        conn.execute(text("UPDATE tb_Client SET Email = 'nouveau@exemple.fr' WHERE id = 1"))
        conn.execute(text("UPDATE tb_Client SET Email = Email WHERE id = 2"))  # no change
        conn.execute(
            text(
                "INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale) "
                "VALUES (9001, 1, 'CLI-X1', 'Nouvelle SARL')"
            )
        )
        conn.execute(
            text("INSERT INTO tb_Client (id, fkVersion, Code, RaisonSociale) VALUES (9002, 1, 'X2', 'E')")
        )
        conn.execute(text("DELETE FROM tb_Client WHERE id = 9002"))  # inserted and deleted: nothing
        lines = "SELECT id FROM tb_Commande WHERE fkClient = 5"
        conn.execute(text(f"DELETE FROM tb_LigneCommande WHERE fkCommande IN ({lines})"))
        conn.execute(text("DELETE FROM tb_Commande WHERE fkClient = 5"))
        conn.execute(text("DELETE FROM tb_Client WHERE id = 5"))
    assert count(erp_db, f"SELECT count(*) FROM {client.log.name}") >= 5
    seq_before = count(erp_db, f"SELECT max(seq) FROM {shadow}")
    with node.write() as conn:
        state = node.lock(conn)
        fold(node, conn, state)
        node.save(conn, state)
    assert count(erp_db, f"SELECT count(*) FROM {client.log.name}") == 0
    with erp_db.connect() as conn:
        changed = conn.execute(
            text(f"SELECT k0, deleted, c{email}, n{email}, c0 FROM {shadow} WHERE seq > :s ORDER BY k0"),
            {"s": seq_before},
        ).all()
    changed = sorted(changed, key=lambda r: (r[0] is not None, r[0] or 0))  # NULL first on every engine
    assert [(r[0], r[1]) for r in changed] == [(None, 1), (1, 0), (9001, 0)]
    _, updated, inserted = changed
    assert updated[2] is not None and updated[3] == 1 and updated[4] is None  # only Email got a clock
    assert inserted[2] is None  # a new row: every column shares its first clock
    assert count(erp_db, f"SELECT count(*) FROM {shadow} WHERE k0 = 9002") == 0


def test_postgresql_capture_statements_never_jit_compile(postgresql: Database) -> None:
    """Even when every plan of the session qualifies for JIT, the capture's statements do not use it.

    Their plan is cached per session with the first statement's size: made for
    a bulk UPDATE it carried JIT compilation, paid again by every later one-row
    write of that session (12 ms each instead of 0.1 ms).
    """
    init_schema(postgresql)
    fill(postgresql, scale=1, seed=4)
    init_node(postgresql, "pc1")
    with postgresql.connect() as conn:
        if not conn.exec_driver_sql("SELECT pg_jit_available()").scalar_one():
            pytest.skip("this PostgreSQL server has no JIT (built without LLVM): nothing can JIT-compile")
    plans: list[str] = []
    with postgresql.begin() as conn:
        raw = conn.connection.dbapi_connection
        raw.add_notice_handler(lambda notice: plans.append(str(notice.message_primary)))  # type: ignore[union-attr]
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_nested_statements = on",
            "SET auto_explain.log_analyze = on",
            "SET client_min_messages = log",
            "SET jit = on",
            "SET jit_above_cost = 0",
        ):
            conn.exec_driver_sql(setting)
        conn.exec_driver_sql("UPDATE tb_Client SET Email = Email || 'x'")
        conn.exec_driver_sql("UPDATE tb_Client SET Email = 'a@b.fr' WHERE id = 1")
    logged = [p for p in plans if "erpsync_l" in p]
    written = [p for p in plans if "Query Text: UPDATE tb_Client" in p]
    assert len(logged) == 2 and len(written) == 2
    assert all("JIT:" in p for p in written)  # JIT works in this session: the application's statements use it
    assert not any("JIT:" in p for p in logged)


def test_postgresql_node_of_an_older_erpsync_gets_its_capture_without_jit_when_opened(
    postgresql: Database,
) -> None:
    """Opened by several processes at once (PCs syncing after an update): each opening succeeds."""
    init_schema(postgresql)
    init_node(postgresql, "hub")
    functions = "SELECT proname, proconfig FROM pg_proc WHERE proname LIKE 'erpsync\\_%\\_%'"
    with postgresql.begin() as conn:  # as version 2 installed them
        for name, _ in conn.execute(text(functions)):
            conn.execute(text(f"ALTER FUNCTION {name}() RESET jit"))
        conn.execute(text("UPDATE erpsync_node SET version = 2"))
    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda _: Node(postgresql), range(4)))
    with postgresql.connect() as conn:
        configs = conn.execute(text(functions)).all()
    assert count(postgresql, "SELECT version FROM erpsync_node") == VERSION
    assert len(configs) == 3 * len(opened[0].tables())
    assert all(config == ["jit=off"] for _, config in configs)


def test_postgresql_node_of_an_older_erpsync_opens_for_a_role_not_owning_its_functions(
    postgresql: Database,
) -> None:
    """A sync running as another role than the one that installed the node still opens it."""
    init_schema(postgresql)
    init_node(postgresql, "hub")
    role = f"erpsync_app_{uuid.uuid4().hex[:8]}"
    functions = "SELECT proconfig FROM pg_proc WHERE proname LIKE 'erpsync\\_%\\_%'"
    with postgresql.begin() as conn:
        for name in conn.execute(text("SELECT proname FROM pg_proc WHERE proname LIKE 'erpsync\\_%\\_%'")):
            conn.execute(text(f"ALTER FUNCTION {name[0]}() RESET jit"))
        conn.execute(text("UPDATE erpsync_node SET version = 2"))
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    try:
        with open_database(postgresql.url.set(username=role)) as as_role:
            assert Node(as_role).name == "hub"
        assert count(postgresql, "SELECT version FROM erpsync_node") == VERSION
        with postgresql.connect() as conn:
            assert {tuple(r[0] or ()) for r in conn.execute(text(functions))} == {()}  # left to their owner
    finally:
        with postgresql.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
