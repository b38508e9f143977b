"""What a duplication copies: a tree of tables found by following the reflected foreign keys.

The plan starts at the level's table and follows every foreign key that points
into a table already in the plan ("child edges"), so a table added under
tb_Commande later (attachments, say) is copied with no code change. Each edge
can be followed deep (the child and its descendants), shallow (the child
rows only) or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import Column, Integer, MetaData, Table, UniqueConstraint

from erpsync.errors import InvalidArgument, SchemaMismatch
from erpsync.numbering import CLIENT, COMMANDE, PROJET

EDGE_MODES = ("deep", "shallow", "skip")

# Levels a user duplicates, and the reference table of each, parents first.
LEVELS: dict[str, str] = {
    "projet": "tb_Projet",
    "version": "tb_Version",
    "client": "tb_Client",
    "commande": "tb_Commande",
}
# The spec's names for the id maps (EqVersion, EqClient, EqCommande…).
EQ_NAMES: dict[str, str] = {f"Eq{name[3:]}": name for name in LEVELS.values()} | {
    "EqLigneCommande": "tb_LigneCommande"
}
# Business numbers a copy gets anew: table → (column, number type).
NUMBERED: dict[str, tuple[str, str]] = {
    "tb_Projet": ("NumProjet", PROJET),
    "tb_Client": ("Code", CLIENT),
    "tb_Commande": ("NumCommande", COMMANDE),
}


@dataclass(frozen=True)
class Edge:
    """A foreign key ``child.column`` → ``parent``'s primary key."""

    child: Table
    column: Column[object]
    parent: Table


@dataclass(frozen=True)
class Step:
    """One table of the plan: how its rows are selected, and what is rewritten in the copies."""

    table: Table
    via: Edge | None  # None for the root
    remap: tuple[Edge, ...]  # other keys into tables copied earlier
    mapped: bool  # keep old → new ids (needed when later tables point here)
    number: tuple[Column[object], str] | None  # business-number column and its type

    @property
    def name(self) -> str:
        """The table's name as stored."""
        return self.table.name


@dataclass
class Plan:
    """The steps of one duplication, parents before children."""

    steps: list[Step] = field(default_factory=list)

    @property
    def root(self) -> Step:
        return self.steps[0]


def find_table(metadata: MetaData, name: str) -> Table:
    """The table called ``name``, compared case-insensitively (PostgreSQL folds names)."""
    for table in metadata.tables.values():
        if table.name.lower() == name.lower():
            return table
    raise SchemaMismatch(
        "the database has no table {table}",
        "create the ERP schema with: erpsync db init DB",
        table=name,
    )


def build_plan(
    metadata: MetaData,
    root_name: str,
    *,
    deep: bool = True,
    edges: Mapping[str, str] | None = None,
    numbered: Mapping[str, tuple[str, str]] = NUMBERED,
) -> Plan:
    """The tables copied from ``root_name``, following child edges breadth-first.

    ``edges`` maps ``child_table`` or ``child_table.column`` (any case) to deep,
    shallow or skip; unnamed edges are deep. ``deep=False`` copies the root alone.
    """
    modes = {key.lower(): mode for key, mode in (edges or {}).items()}
    for key, mode in modes.items():
        if mode not in EDGE_MODES:
            raise InvalidArgument(
                "edge {edge} has mode {mode!r}; use deep, shallow or skip", None, edge=key, mode=mode
            )
    root = find_table(metadata, root_name)
    order: list[Table] = [root]
    via: dict[str, Edge | None] = {root.name: None}
    expand = [root] if deep else []
    while expand:
        parent = expand.pop(0)
        for child in sorted(metadata.tables.values(), key=lambda t: t.name.lower()):
            if child.name in via:
                continue
            for fk in sorted(child.foreign_keys, key=lambda f: f.parent.name):
                if fk.column.table is not parent:
                    continue
                mode = modes.get(
                    f"{child.name}.{fk.parent.name}".lower(), modes.get(child.name.lower(), "deep")
                )
                if mode == "skip":
                    continue
                via[child.name] = Edge(child, fk.parent, parent)
                order.append(child)
                if mode == "deep":
                    expand.append(child)
                break
    steps: list[Step] = []
    referenced: set[str] = {root.name}
    remaps: dict[str, tuple[Edge, ...]] = {}
    for index, table in enumerate(order):
        earlier = {t.name for t in order[:index]}
        edge = via[table.name]
        extra = tuple(
            Edge(table, fk.parent, fk.column.table)
            for fk in sorted(table.foreign_keys, key=lambda f: f.parent.name)
            if fk.column.table.name in earlier and (edge is None or fk.parent is not edge.column)
        )
        remaps[table.name] = extra
        referenced |= {e.parent.name for e in extra} | ({edge.parent.name} if edge else set())
    lowered = {k.lower(): v for k, v in numbered.items()}
    for table in order:
        rule = lowered.get(table.name.lower())
        number = None
        if rule is not None:
            column = next(c for c in table.columns if c.name.lower() == rule[0].lower())
            number = (column, rule[1])
        step = Step(table, via[table.name], remaps[table.name], table.name in referenced, number)
        _check_copyable(step)
        steps.append(step)
    return Plan(steps)


def _check_copyable(step: Step) -> None:
    """Refuse, before writing, a table whose copies could not be inserted."""
    table = step.table
    pk = list(table.primary_key.columns)
    if step.mapped and (len(pk) != 1 or not isinstance(pk[0].type, Integer)):
        raise SchemaMismatch(
            "{table} cannot be duplicated: other copied tables refer to it, and its primary key is "
            "not a single integer column",
            "exclude the tables that refer to it with --edge TABLE=skip",
            table=table.name,
        )
    rewritten = {c.name for c in pk} | {e.column.name for e in step.remap}
    rewritten |= {step.via.column.name} if step.via else set()
    rewritten |= {step.number[0].name} if step.number else set()
    uniques = [
        {c.name for c in cst.columns} for cst in table.constraints if isinstance(cst, UniqueConstraint)
    ]
    uniques += [{c.name for c in index.columns} for index in table.indexes if index.unique]
    for columns in uniques:
        if not columns & rewritten:
            raise SchemaMismatch(
                "{table} cannot be duplicated: its unique column {column} would be copied as is",
                "skip this table with --edge {table}=skip",
                table=table.name,
                column=", ".join(sorted(columns)),
            )
