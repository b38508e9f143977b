"""The wire format of a batch: what ``to_json`` writes, ``from_json`` reads back unchanged,
and what a server is sent malformed is refused before anything is applied."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erpsync.errors import ErpSyncError
from erpsync.sync.changeset import ALIVE, GONE, Batch, RowChange, clock_slots, from_json, to_json
from erpsync.sync.hlc import Stamp
from erpsync.transport import wire

NODES = ["5b0c6d8e-1f2a-4c3b-9d4e-0a1b2c3d4e5f", "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"]

values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, max_value=10**9, min_value=-(10**9)),
    st.dates(),
    st.datetimes(),
    st.times(),
    st.timedeltas(min_value=timedelta(hours=-800), max_value=timedelta(hours=800)),
    st.binary(max_size=8),
)
stamps = st.builds(Stamp, st.integers(min_value=0, max_value=2**62), st.sampled_from(NODES))


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    """Batches of every kind of row: written once, column by column, tombstones, keyless."""
    width = draw(st.integers(min_value=0, max_value=4))
    stream = draw(st.sampled_from([ALIVE, GONE]))
    rows = []
    for n in range(draw(st.integers(min_value=0, max_value=6))):
        key = draw(st.one_of(st.none(), st.tuples(values.filter(lambda v: v is not None))))
        deleted = draw(st.one_of(st.none(), stamps))
        if stream == GONE or (draw(st.booleans()) and deleted is not None):  # a tombstone
            seen = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)))
            rows.append(RowChange(f"g{n}", key, None, None, deleted or Stamp(1, NODES[0]), seen))
            continue
        row_values = tuple(draw(st.lists(values, min_size=width, max_size=width)))
        slots = clock_slots(width)
        if draw(st.booleans()):
            clocks = (draw(stamps),) * slots
        else:
            clocks = tuple(draw(st.lists(stamps, min_size=slots, max_size=slots)))
        versions = draw(
            st.one_of(st.none(), st.dictionaries(st.sampled_from(NODES), st.integers(0, 2**62), min_size=1))
        )
        rows.append(RowChange(f"g{n}", key, row_values, clocks, deleted, None, versions))
    return Batch(
        batch_id="b1",
        source=NODES[0],
        table="tb_projet",
        stream=stream,
        columns=tuple(f"c{i}" for i in range(width)),
        rows=rows,
        since=3,
        upto=9,
        names={NODES[0]: "PC1"},
        sync_id="s1",
    )


@settings(max_examples=300, deadline=None)
@given(batch=batches())
def test_a_batch_comes_back_exactly_as_it_was_written(batch: Batch) -> None:
    again = from_json(to_json(batch))
    assert again == batch
    for before, after in zip(batch.rows, again.rows, strict=True):  # types too: 1 is not 1.0 nor True
        assert [type(v) for v in before.values or ()] == [type(v) for v in after.values or ()]
        assert [str(v) for v in before.values or ()] == [str(v) for v in after.values or ()]


def _sample() -> Batch:
    width = 2
    return Batch(
        batch_id="b1",
        source=NODES[0],
        table="tb_projet",
        stream=ALIVE,
        columns=("NumProjet", "Budget"),
        rows=[
            RowChange("g1", (1,), ("PRJ-1", Decimal("10.50")), (Stamp(5, NODES[0]),) * width),
            RowChange("g2", None, None, None, Stamp(6, NODES[1])),
            RowChange("g3", (3,), ("PRJ-3", None), (Stamp(7, NODES[0]), Stamp(8, NODES[1]))),
        ],
        since=0,
        upto=3,
        names={NODES[0]: "PC1"},
    )


def test_a_sample_batch_is_written_column_by_column() -> None:
    data = json.loads(to_json(_sample()))
    assert data["gids"] == ["g1", "g2", "g3"]
    assert data["values"] == {"at": [0, 2], "columns": [["PRJ-1", "PRJ-3"], {"$d": ["10.50", None]}]}
    assert data["keys"] == {"at": [0, 2], "columns": [[1, 3]]}
    assert data["clocks"]["hlc"] == [5, None] and data["clocks"]["mixed"] == [[[7, 0], [8, 1]]]
    assert data["deleted"] == {"at": [1], "hlc": [6], "node": [1]}


def _broken(change: Any) -> str:
    data = json.loads(to_json(_sample()))
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d["values"].update(at=[2, 0]), id="positions out of order"),
        pytest.param(lambda d: d["values"].update(at=[0, 5]), id="position past the last row"),
        pytest.param(lambda d: d["values"].update(at=[-1, 2]), id="negative position"),
        pytest.param(lambda d: d["values"].update(at=[0, "2"]), id="position as text"),
        pytest.param(lambda d: d["values"]["columns"][0].pop(), id="a column too short"),
        pytest.param(lambda d: d["clocks"].update(mixed=[]), id="mixed clocks missing"),
        pytest.param(lambda d: d["clocks"]["mixed"].append([[1, 0], [2, 0]]), id="mixed clocks left over"),
        pytest.param(lambda d: d["clocks"].update(node=[7, None]), id="unknown node number"),
        pytest.param(lambda d: d["values"]["columns"].__setitem__(1, {"$d": "10.50"}), id="tag of no list"),
        pytest.param(lambda d: d["values"]["columns"].__setitem__(1, {"$x": ["1", None]}), id="unknown tag"),
        pytest.param(lambda d: d.pop("gids"), id="no global ids"),
    ],
)
def test_a_malformed_batch_is_refused_with_one_line(change: Any) -> None:
    with pytest.raises(ErpSyncError) as refused:
        wire.read_batch(_broken(change))
    message = str(refused.value)
    assert message.startswith("the batch is not valid: ") and "\n" not in message


def _column(data: dict[str, Any], part: str, i: int, column: Any) -> None:
    data[part]["columns"][i] = column


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: _column(d, "values", 0, [["PRJ-1"], "PRJ-3"]), "values must be text, numbers"),
        (lambda d: _column(d, "values", 0, [{"$f": "inf"}, "PRJ-3"]), "values must be text, numbers"),
        (lambda d: _column(d, "keys", 0, [2**63, 3]), "values must be text, numbers"),
        (lambda d: _column(d, "values", 0, ["PRJ\x00", "PRJ-3"]), "text must not hold NUL characters"),
        (lambda d: _column(d, "values", 0, ["\ud800", None]), "text must be valid Unicode"),
        (lambda d: d["values"]["columns"].append([1, 2]), "rows present need 2 values and 2 clocks"),
        (lambda d: d["keys"].update(columns=[]), "a key needs at least one value"),
        (lambda d: d.update(stream=GONE), "the tombstone stream holds tombstones only"),
        (lambda d: d["gids"].__setitem__(0, "g" * 33), "every row needs a global id of at most 32"),
        (lambda d: d["nodes"].__setitem__(0, "n" * 37), "clocks must name nodes by id"),
        (lambda d: d["clocks"].update(hlc=["5", None]), "clocks must be whole numbers"),
        (lambda d: d["clocks"]["mixed"][0][1].__setitem__(0, 2**63), "clocks must be whole numbers"),
        (lambda d: d["deleted"].update(hlc=[-1]), "clocks must be whole numbers"),
    ],
    ids=[
        "a list as a value",
        "an infinite float",
        "a key beyond 64 bits",
        "NUL in a text",
        "a lone surrogate",
        "a column too many",
        "a key of no value",
        "a row present among tombstones",
        "a global id too long",
        "a node id too long",
        "a clock as text",
        "a mixed clock beyond 63 bits",
        "a negative delete clock",
    ],
)
def test_a_server_refuses_what_the_databases_cannot_store(change: Any, reason: str) -> None:
    with pytest.raises(ErpSyncError) as refused:
        wire.read_batch(_broken(change))
    assert str(refused.value).startswith(f"the batch is not valid: {reason}")


def test_a_server_whose_engine_stores_nul_takes_it_in_values_never_in_ids() -> None:
    text = _broken(lambda d: _column(d, "values", 0, ["avant\x00après", "PRJ-3"]))
    assert wire.read_batch(text, nul=True).rows[0].values == ("avant\x00après", Decimal("10.50"))
    with pytest.raises(ErpSyncError, match="text must not hold NUL characters"):
        wire.read_batch(_broken(lambda d: d["gids"].__setitem__(0, "g\x001")), nul=True)


def test_values_of_every_type_survive_a_server_check() -> None:
    batch = _sample()
    batch.rows[0] = RowChange(
        "g1",
        (1,),
        (datetime(2026, 12, 7, 8, 30), date(2026, 1, 2)),
        (Stamp(5, NODES[0]),) * 2,
    )
    batch.rows[2] = RowChange("g3", (3,), (time(12, 0), b"\x00\xff"), (Stamp(7, NODES[0]),) * 2)
    assert wire.read_batch(to_json(batch)) == batch


def test_an_apply_request_encoded_ahead_is_taken_once_and_only_for_its_first_try() -> None:
    applies = wire.ApplyRequests(lambda request: request)  # "encoded" as the request itself
    batch, lww = _sample(), {"": "lww"}
    plain: dict[str, Any] = {"restore": False, "skip": frozenset(), "loose": frozenset()}
    applies.prepare(batch, lww)
    prepared = applies.ready[batch.batch_id][1]
    assert applies.request(batch, lww, **plain) is prepared
    again = applies.request(batch, lww, **plain)  # taken: encoded anew, the same request
    assert again is not prepared and again == prepared
    applies.prepare(batch, lww)
    retry = applies.request(batch, lww, **{**plain, "skip": frozenset({"g9"})})
    assert retry.skip == ["g9"] and not applies.ready
    applies.prepare(batch, lww)
    assert applies.request(batch, {"": "manual"}, **plain).policies == {"": "manual"}
