"""Conflict policies: how a row changed on two nodes is settled, column by column.

A row arriving from a peer is compared with the local row column by column,
through the clocks (``Stamp``) of the last write of each column:

- the remote row *dominates* when each of its columns is at least as recent as
  the local one: the local row simply catches up (no conflict);
- it is *stale* when the local row dominates: nothing to do;
- otherwise both sides changed it without seeing the other's change: the rows
  are *concurrent*, and the policy of each column decides.

Policies:

``lww`` (default)
    last writer wins per column: the more recent clock (ties go to the larger
    node id), so two nodes editing different columns both keep their edit;
``no-overwrite``
    the seed's "merge without replacement": rows missing here are added, rows
    present here are never changed or deleted by a sync; differences are
    recorded for review;
``prefer-local`` / ``prefer-remote``
    on a concurrent change, the whole row of one side wins. "Local" is the node
    that runs the sync: when it pushes, the peer applies ``prefer-remote``;
``manual``
    on a concurrent change with different values, the local row stays as it is
    and the conflict is queued with the base, local and remote values until a
    person resolves it (``erpsync conflicts resolve``).

A value that wins although its clock is older (``prefer-*``, a resolution) is
written again with a new clock, so it also wins on every other node.

Update against delete: a delete is a tombstone with a clock. Under ``lww`` the
later of the delete and the row's last write wins: a row edited after its
deletion somewhere comes back everywhere; a delete later than every edit
removes the row everywhere. ``prefer-*`` pick the preferred side when the
delete and the edit are concurrent (the deleting node had not seen the edit),
``manual`` queues that case, ``no-overwrite`` never deletes a row present
here. Whatever the policy, a row that other rows still reference is never
deleted by a sync: it is kept, and restored where it had been deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from erpsync.errors import InvalidArgument
from erpsync.sync.hlc import Stamp

LWW = "lww"
NO_OVERWRITE = "no-overwrite"
PREFER_LOCAL = "prefer-local"
PREFER_REMOTE = "prefer-remote"
MANUAL = "manual"
POLICIES = (LWW, NO_OVERWRITE, PREFER_LOCAL, PREFER_REMOTE, MANUAL)


class InvalidPolicy(InvalidArgument):
    """A policy name or a ``--policy`` option cannot be understood."""


def check_policy(name: str) -> str:
    """``name`` if it is a policy, else ``InvalidPolicy``."""
    if name not in POLICIES:
        raise InvalidPolicy(
            "unknown conflict policy {policy}",
            "use one of: {choices}",
            policy=name,
            choices=", ".join(POLICIES),
        )
    return name


def swap(policy: str) -> str:
    """The same policy seen from the other node (``prefer-local`` ↔ ``prefer-remote``)."""
    return {PREFER_LOCAL: PREFER_REMOTE, PREFER_REMOTE: PREFER_LOCAL}.get(policy, policy)


@dataclass(frozen=True)
class PolicyOverride:
    """A policy given for one sync: for every table, one table, or one column."""

    policy: str
    table: str | None = None
    column: str | None = None

    @classmethod
    def parse(cls, text: str) -> PolicyOverride:
        """``lww``, ``tb_Client=manual`` or ``tb_Client.Email=prefer-remote``."""
        target, sep, policy = text.rpartition("=")
        if not sep:
            return cls(check_policy(text.strip()))
        table, dot, column = target.strip().partition(".")
        if not table:
            raise InvalidPolicy(
                "--policy {value} names no table",
                "write --policy POLICY, --policy TABLE=POLICY or --policy TABLE.COLUMN=POLICY",
                value=text,
            )
        return cls(check_policy(policy.strip()), table.lower(), column.lower() if dot else None)


class Relation(Enum):
    """How a remote row relates to the local one."""

    EQUAL = "equal"
    REMOTE_NEWER = "remote-newer"
    LOCAL_NEWER = "local-newer"
    CONCURRENT = "concurrent"


class Side(Enum):
    """Who changed one column, as far as the two rows' histories tell."""

    SAME = "same"
    REMOTE = "remote"
    """Only the peer changed it since the local value (the peer had seen the local value)."""
    LOCAL = "local"
    BOTH = "both"
    """Each side wrote it without having seen the other's write."""


Versions = dict[str, int]
"""A row's version vector: for each node, the latest of its writes the row's state includes."""


def implied(stamps: Sequence[Stamp]) -> Versions:
    """The version vector the column clocks alone imply (what is stored when nothing more is known)."""
    if stamps and stamps.count(stamps[0]) == len(stamps):  # a row written once: one clock
        return {stamps[0].node: stamps[0].hlc} if stamps[0].node else {}
    out: Versions = {}
    for stamp in stamps:
        if stamp.node and stamp.hlc > out.get(stamp.node, 0):
            out[stamp.node] = stamp.hlc
    return out


def merged(*vectors: Versions) -> Versions:
    """The smallest version vector including all of ``vectors``."""
    out: Versions = {}
    for vector in vectors:
        for node, hlc in vector.items():
            if hlc > out.get(node, 0):
                out[node] = hlc
    return out


def parse_versions(text: str | None, ids: dict[int, str]) -> Versions | None:
    """A stored version vector (``number:clock,…``, local node numbers) by node id."""
    if not text:
        return None
    out: Versions = {}
    for part in text.split(","):
        number, _, clock = part.partition(":")
        out[ids[int(number)]] = int(clock)
    return out


def format_versions(versions: Versions, number: Callable[[str], int]) -> str:
    """A version vector as stored, with ``number`` giving each node's local number."""
    return ",".join(f"{number(node)}:{clock}" for node, clock in sorted(versions.items()))


def _seen(stamp: Stamp, versions: Versions) -> bool:
    return not stamp.node or stamp.hlc <= versions.get(stamp.node, 0)


def compare(
    local: Sequence[Stamp], local_versions: Versions, remote: Sequence[Stamp], remote_versions: Versions
) -> tuple[Relation, list[Side]]:
    """How two versions of a row relate, and who changed each column.

    A column whose local write the peer had seen (it is in the peer's version
    vector) was changed by the peer only, and so on; a column each side wrote
    without seeing the other's write was changed by both. Version vectors make
    this exact where clocks alone cannot tell "later" from "after seeing": a
    row relayed through a third node is never a false conflict.
    """
    sides: list[Side] = []
    remote_wrote = local_wrote = False  # this runs for every row received: no sets of enums
    for lc, rc in zip(local, remote, strict=True):
        if lc == rc:
            sides.append(Side.SAME)
            continue
        local_seen, remote_seen = _seen(lc, remote_versions), _seen(rc, local_versions)
        if local_seen and not remote_seen:
            side = Side.REMOTE
        elif remote_seen and not local_seen:
            side = Side.LOCAL
        elif not local_seen and not remote_seen:
            side = Side.BOTH
        else:  # both histories include both writes: the clocks decide
            side = Side.REMOTE if rc > lc else Side.LOCAL
        sides.append(side)
        remote_wrote = remote_wrote or side is not Side.LOCAL
        local_wrote = local_wrote or side is not Side.REMOTE
    if not remote_wrote and not local_wrote:
        return Relation.EQUAL, sides
    if remote_wrote and local_wrote:  # a column both wrote, or columns each wrote
        return Relation.CONCURRENT, sides
    return (Relation.REMOTE_NEWER if remote_wrote else Relation.LOCAL_NEWER), sides


@dataclass
class ColumnDecision:
    """What to do with one column of a row present on both sides."""

    take_remote: bool
    restamp: bool = False
    """Write the chosen value again with a new clock (it won with the older clock)."""
    conflict: bool = False
    """Keep local, and record the difference (``manual`` queues it, ``no-overwrite`` notes it)."""


def decide_column(
    policy: str, rel: Relation, side: Side, local: Stamp, remote: Stamp, same_value: bool
) -> ColumnDecision:
    """The decision for one column of a row present on both sides, under ``policy``.

    ``policy`` is seen from the applying node (``prefer-local`` keeps its value).
    """
    remote_newer = remote > local
    if side is Side.SAME:
        return ColumnDecision(False)
    if policy == NO_OVERWRITE:
        return ColumnDecision(False, conflict=side is not Side.LOCAL and not same_value)
    if rel is not Relation.CONCURRENT or policy == LWW:
        return ColumnDecision(remote_newer)
    if policy == PREFER_REMOTE:
        return ColumnDecision(True, restamp=not remote_newer)
    if policy == PREFER_LOCAL:
        return ColumnDecision(False, restamp=remote_newer)
    # manual: only a column both sides wrote is a conflict; the others merge
    if side is Side.BOTH and not same_value:
        return ColumnDecision(False, conflict=True)
    return ColumnDecision(remote_newer)
