"""Realistic French demo data for the reference schema, deterministic for a seed.

``fill`` appends to whatever the tables hold: ids continue after the largest
one, business numbers come from the same counters as every other number.
Rows are generated and inserted in bounded chunks through the engine's bulk
path (COPY on PostgreSQL, executemany elsewhere), all in one transaction.
"""

from __future__ import annotations

import random
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from faker import Faker
from sqlalchemy import Connection, func, select

from erpsync import numbering
from erpsync.db import Database
from erpsync.errors import InvalidArgument
from erpsync.progress import ProgressCallback
from erpsync.schema import ERP_TABLES, ErpTables, require_schema

# Per unit of --scale.
USERS_PER_SCALE = 5
PROJECTS_PER_SCALE = 3
VERSIONS = (2, 4)
CLIENTS_PER_VERSION = (5, 15)
COMMANDES_PER_CLIENT = (2, 8)
LINES_PER_COMMANDE = (1, 15)
# The benchmark project (issue 3): 10 versions, a client per 1,000 lines, a commande per 50.
BIG_VERSIONS = 10
BIG_LINES_PER_CLIENT = 1000
BIG_LINES_PER_COMMANDE = 50

CHUNK_LINES = 50_000
START = datetime(2024, 1, 1, 8, 0)
SPAN_DAYS = 900

STATUTS = ("BROUILLON", "VALIDEE", "EXPEDIEE", "FACTUREE", "ANNULEE")
STATUT_WEIGHTS = (10, 25, 20, 40, 5)
QUANTITIES = (1, 1, 1, 2, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 50, 100)

_ARTICLES = {
    "VIS": ["Vis inox", "Vis à bois", "Boulon hexagonal", "Écrou frein", "Rondelle plate"],
    "CAB": ["Câble RJ45", "Câble HDMI", "Rallonge électrique", "Gaine ICTA", "Câble USB-C"],
    "OUT": ["Perceuse visseuse", "Scie sauteuse", "Niveau laser", "Clé dynamométrique", "Meuleuse"],
    "BUR": ["Ramette papier A4", "Classeur à levier", "Stylo bille", "Agrafeuse", "Cahier Clairefontaine"],
    "INF": ["Écran 27 pouces", "Clavier sans fil", "Souris ergonomique", "Disque SSD", "Switch réseau"],
    "PRE": [
        "Prestation d'installation",
        "Journée de formation",
        "Maintenance annuelle",
        "Audit sur site",
        "Déplacement technicien",
    ],
    "LIC": [
        "Licence logicielle",
        "Abonnement cloud",
        "Support premium",
        "Module comptabilité",
        "Extension de garantie",
    ],
}
_QUALIFIERS = [
    "standard",
    "professionnel",
    "renforcé",
    "compact",
    "grand modèle",
    "lot de 10",
    "lot de 50",
    "noir",
    "blanc",
    "gris anthracite",
    "qualité supérieure",
    "éco",
]
_PROJECT_KINDS = [
    "Déploiement",
    "Rénovation",
    "Migration",
    "Extension",
    "Modernisation",
    "Équipement",
    "Aménagement",
    "Maintenance",
]
_VERSION_LABELS = [
    "Version initiale",
    "Révision après devis",
    "Variante économique",
    "Variante haut de gamme",
    "Version validée client",
    "Avenant",
]


@dataclass
class FillResult:
    """Rows added per table, in parent-to-child order."""

    rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Article:
    reference: str
    designation: str
    price_cents: int


def fill(
    db: Database,
    *,
    scale: int = 1,
    seed: int = 0,
    big_project: int = 0,
    progress: ProgressCallback | None = None,
) -> FillResult:
    """Add demo data: ``scale`` units of ordinary projects, plus one project of ``big_project`` lines.

    Deterministic for a given ``seed`` and starting content. One transaction:
    on any error (or Ctrl-C) nothing is added.
    """
    if scale < 0:
        raise InvalidArgument(
            "--scale must be 0 or more, not {scale}", "give a whole number, e.g. --scale 1", scale=scale
        )
    if big_project < 0:
        raise InvalidArgument(
            "--big-project must be 0 or more, not {lines}",
            "give a whole number, e.g. --scale 1",
            lines=big_project,
        )
    schema = require_schema(db)
    result = FillResult()
    with db.begin() as conn:
        generator = _Generator(conn, schema, seed)
        done = 0
        for table, columns, rows in generator.batches(scale, big_project):
            added = db.dialect.bulk_insert(conn, schema[table], columns, rows)
            result.rows[table] = result.rows.get(table, 0) + added
            done += added
            if progress is not None:
                progress("Inserting", done, generator.total)
        for table in ERP_TABLES:
            if result.rows.get(table):
                db.dialect.after_explicit_ids(conn, schema[table])
    return result


Batch = tuple[str, list[str], list[tuple[Any, ...]]]
"""Rows for one table: (spec table name, column keys, rows as tuples in that order)."""


def generate_batches(
    conn: Connection, schema: ErpTables, *, seed: int = 0, scale: int = 0, big_project: int = 0
) -> Iterator[Batch]:
    """The batches ``fill`` inserts, parents first, without inserting them (benchmarks use it).

    Business numbers are drawn from ``conn``'s counters as the rows are generated.
    """
    return _Generator(conn, schema, seed).batches(scale, big_project)


class _Generator:
    """Builds rows level by level; ids continue after the largest already in each table."""

    def __init__(self, conn: Connection, schema: ErpTables, seed: int) -> None:
        self.conn = conn
        self.schema = schema
        self.rng = random.Random(seed)
        self.fake = Faker("fr_FR")
        self.fake.seed_instance(seed)
        self.next_id = {
            name: int(conn.execute(select(func.coalesce(func.max(schema[name].c.id), 0))).scalar_one()) + 1
            for name in ERP_TABLES
            if "id" in schema[name].c
        }
        self.articles = self._catalog()
        self.total = 0

    # -- helpers ---------------------------------------------------------------------------

    def _ids(self, table: str, count: int) -> range:
        first = self.next_id[table]
        self.next_id[table] = first + count
        return range(first, first + count)

    def _numbers(self, kind: str, years: list[int]) -> list[str]:
        """Business numbers for rows dated in ``years``, drawn from the shared counters."""
        fmt = numbering.DEFAULT_FORMATS[kind]
        keyed = [year if fmt.yearly else 0 for year in years]
        nxt = {
            year: numbering.reserve(self.conn, self.schema, kind, year, count)
            for year, count in sorted(Counter(keyed).items())
        }
        out = []
        for year in keyed:
            out.append(fmt.render(nxt[year], year))
            nxt[year] += 1
        return out

    def _when(self, after: datetime = START) -> datetime:
        remaining = max(1, (START + timedelta(days=SPAN_DAYS) - after).days)
        moment = after + timedelta(days=self.rng.randrange(remaining), minutes=self.rng.randrange(600))
        return moment.replace(second=0, microsecond=0)

    def _catalog(self) -> list[_Article]:
        articles = []
        seen: set[str] = set()
        for prefix, names in _ARTICLES.items():
            for name in names:
                for qualifier in self.rng.sample(_QUALIFIERS, 6):
                    ref = f"{prefix}-{self.rng.randrange(10000, 99999)}"
                    while ref in seen:
                        ref = f"{prefix}-{self.rng.randrange(10000, 99999)}"
                    seen.add(ref)
                    cents = self.rng.randrange(50, 20000) * (5 if prefix in ("PRE", "LIC") else 1)
                    articles.append(_Article(ref, f"{name} {qualifier}", cents))
        return articles

    # -- levels ----------------------------------------------------------------------------

    def batches(self, scale: int, big_project: int) -> Iterator[Batch]:
        users = self._users(USERS_PER_SCALE * scale if scale else (1 if big_project else 0))
        user_ids = [row[0] for row in users] or self._existing_user_ids()
        plans = [self._plan_ordinary() for _ in range(PROJECTS_PER_SCALE * scale)]
        if big_project:
            plans.append(_plan_big(big_project))
        self.total = len(users) + sum(plan.rows() for plan in plans)
        if users:
            yield "tb_Utilisateur", ["id", "Login", "Nom", "Prenom", "Email"], users
        for plan in plans:
            yield from self._project(plan, user_ids)

    def _existing_user_ids(self) -> list[int]:
        table = self.schema["tb_Utilisateur"]
        return [int(i) for i in self.conn.execute(select(table.c.id).order_by(table.c.id)).scalars()]

    def _users(self, count: int) -> list[tuple[Any, ...]]:
        rows = []
        for user_id in self._ids("tb_Utilisateur", count):
            first, last = self.fake.first_name(), self.fake.last_name()
            login = _ascii(f"{first[0]}{last}").lower()[:40] + str(user_id)
            domain = _ascii(self.fake.domain_word())
            rows.append((user_id, login, last, first, f"{login}@{domain}.fr"))
        return rows

    def _plan_ordinary(self) -> _Plan:
        rng = self.rng
        versions = []
        for _ in range(rng.randint(*VERSIONS)):
            clients = []
            for _ in range(rng.randint(*CLIENTS_PER_VERSION)):
                clients.append(
                    [rng.randint(*LINES_PER_COMMANDE) for _ in range(rng.randint(*COMMANDES_PER_CLIENT))]
                )
            versions.append(clients)
        return _Plan(versions)

    def _project(self, plan: _Plan, user_ids: list[int]) -> Iterator[Batch]:
        rng, fake = self.rng, self.fake
        (project_id,) = self._ids("tb_Projet", 1)
        created = self._when()
        (num,) = self._numbers(numbering.PROJET, [created.year])
        city = fake.city()
        label = f"{rng.choice(_PROJECT_KINDS)} {fake.company()} – {city}"[:200]
        creator = rng.choice(user_ids) if user_ids else None
        yield (
            "tb_Projet",
            ["id", "NumProjet", "Libelle", "fkCreateur", "DateCreation"],
            [(project_id, num, label, creator, created)],
        )
        version_ids = self._ids("tb_Version", len(plan.versions))
        versions = [
            (vid, project_id, f"V{i + 1}", _VERSION_LABELS[i % len(_VERSION_LABELS)], self._when(created))
            for i, vid in enumerate(version_ids)
        ]
        yield "tb_Version", ["id", "fkProjet", "NumVersion", "Libelle", "DateCreation"], versions
        client_rows: list[tuple[Any, ...]] = []
        orders: list[tuple[int, list[int], date]] = []  # (client id, line counts, earliest date)
        for (vid, *_rest), clients in zip(versions, plan.versions, strict=True):
            codes = self._numbers(numbering.CLIENT, [0] * len(clients))
            for code, client_id, lines in zip(
                codes, self._ids("tb_Client", len(clients)), clients, strict=True
            ):
                name = fake.company()
                slug = _ascii(name).lower().replace(" ", "")[:30] or "contact"
                phone = fake.phone_number()[:20]
                client_rows.append((client_id, vid, code, name[:200], f"contact@{slug}.fr", phone))
                orders.append((client_id, lines, created.date()))
        yield "tb_Client", ["id", "fkVersion", "Code", "RaisonSociale", "Email", "Telephone"], client_rows
        yield from self._orders(orders)

    def _orders(self, orders: list[tuple[int, list[int], date]]) -> Iterator[Batch]:
        """Commandes and their lines, a chunk of about CHUNK_LINES lines at a time."""
        rng, articles, n_articles = self.rng, self.articles, len(self.articles)
        quantities = [(q, Decimal(q)) for q in QUANTITIES]
        pending: list[tuple[int, int, date]] = []  # (client id, line count, date)
        for client_id, line_counts, earliest in orders:
            for count in line_counts:
                day = earliest + timedelta(
                    days=rng.randrange(max(1, (START.date() + timedelta(days=SPAN_DAYS) - earliest).days))
                )
                pending.append((client_id, count, day))
        chunk_start = 0
        while chunk_start < len(pending):
            chunk_end, lines_in_chunk = chunk_start, 0
            while chunk_end < len(pending) and (lines_in_chunk < CHUNK_LINES or chunk_end == chunk_start):
                lines_in_chunk += pending[chunk_end][1]
                chunk_end += 1
            chunk = pending[chunk_start:chunk_end]
            numbers = self._numbers(numbering.COMMANDE, [day.year for _, _, day in chunk])
            commande_rows: list[tuple[Any, ...]] = []
            line_rows: list[tuple[Any, ...]] = []
            line_ids = iter(self._ids("tb_LigneCommande", lines_in_chunk))
            for (client_id, count, day), num, cid in zip(
                chunk, numbers, self._ids("tb_Commande", len(chunk)), strict=True
            ):
                total_cents = 0
                for n in range(1, count + 1):
                    article = articles[rng.randrange(n_articles)]
                    qty, qty_dec = quantities[rng.randrange(len(quantities))]
                    total_cents += qty * article.price_cents
                    line_rows.append(
                        (
                            next(line_ids),
                            cid,
                            n,
                            article.reference,
                            article.designation,
                            qty_dec,
                            Decimal(article.price_cents).scaleb(-2),
                        )
                    )
                statut = rng.choices(STATUTS, STATUT_WEIGHTS)[0]
                commande_rows.append((cid, client_id, num, day, statut, Decimal(total_cents).scaleb(-2)))
            yield (
                "tb_Commande",
                ["id", "fkClient", "NumCommande", "DateCommande", "Statut", "MontantHT"],
                commande_rows,
            )
            yield (
                "tb_LigneCommande",
                ["id", "fkCommande", "NumLigne", "Reference", "Designation", "Quantite", "PrixUnitaire"],
                line_rows,
            )
            chunk_start = chunk_end


@dataclass(frozen=True)
class _Plan:
    """The shape of one project: per version, per client, the line count of each commande."""

    versions: list[list[list[int]]]

    def rows(self) -> int:
        clients = [c for v in self.versions for c in v]
        return 1 + len(self.versions) + len(clients) + sum(len(c) + sum(c) for c in clients)


def _plan_big(lines: int) -> _Plan:
    """The benchmark tree: 10 versions, a client per 1,000 lines, a commande per 50 lines."""
    n_clients = max(1, lines // BIG_LINES_PER_CLIENT)
    n_commandes = max(n_clients, lines // BIG_LINES_PER_COMMANDE)
    per_commande = _spread(lines, n_commandes)
    per_client = _spread(n_commandes, n_clients)
    clients, start = [], 0
    for count in per_client:
        clients.append(per_commande[start : start + count])
        start += count
    per_version = _spread(n_clients, min(BIG_VERSIONS, n_clients))
    versions, start = [], 0
    for count in per_version:
        versions.append(clients[start : start + count])
        start += count
    return _Plan(versions)


def _spread(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal whole parts."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _ascii(text: str) -> str:
    """``text`` without accents or characters unusable in a login or an e-mail address."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain if ch.isalnum() or ch == " ")
