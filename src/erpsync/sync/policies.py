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

from collections.abc import Sequence
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
    """How a remote row's column clocks relate to the local row's."""

    EQUAL = "equal"
    REMOTE_NEWER = "remote-newer"
    LOCAL_NEWER = "local-newer"
    CONCURRENT = "concurrent"


def relation(local: Sequence[Stamp], remote: Sequence[Stamp]) -> Relation:
    """Which side has column writes the other has not seen."""
    remote_ahead = local_ahead = False
    for lc, rc in zip(local, remote, strict=True):
        if rc > lc:
            remote_ahead = True
        elif lc > rc:
            local_ahead = True
    if remote_ahead and local_ahead:
        return Relation.CONCURRENT
    if remote_ahead:
        return Relation.REMOTE_NEWER
    if local_ahead:
        return Relation.LOCAL_NEWER
    return Relation.EQUAL


@dataclass
class ColumnDecision:
    """What to do with one column of a row present on both sides."""

    take_remote: bool
    restamp: bool = False
    """Write the chosen value again with a new clock (it won with the older clock)."""
    conflict: bool = False
    """Keep local, and record the difference (``manual`` queues it, ``no-overwrite`` notes it)."""


def decide_column(
    policy: str, rel: Relation, local: Stamp, remote: Stamp, same_value: bool
) -> ColumnDecision:
    """The decision for one column of a row changed on both sides, under ``policy``.

    ``policy`` is seen from the applying node (``prefer-local`` keeps its value).
    """
    remote_newer = remote > local
    if rel is not Relation.CONCURRENT:
        if policy == NO_OVERWRITE:
            return ColumnDecision(False, conflict=remote_newer and not same_value)
        return ColumnDecision(remote_newer)
    if policy == LWW:
        return ColumnDecision(remote_newer)
    if policy == PREFER_REMOTE:
        return ColumnDecision(True, restamp=not remote_newer and remote != local)
    if policy == PREFER_LOCAL:
        return ColumnDecision(False, restamp=remote_newer)
    if same_value:  # manual or no-overwrite, nothing to choose: keep the newer clock
        return ColumnDecision(remote_newer)
    return ColumnDecision(False, conflict=True)
