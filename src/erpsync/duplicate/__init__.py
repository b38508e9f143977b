"""Deep duplication of record trees: set-based, atomic, journaled, with new business numbers.

``duplicate(db, "projet", 7)`` copies project 7 with its versions, clients,
commandes and lines; ``lookup`` queries a run's saved id map (SP_GetEqMapping);
``undo`` deletes exactly what a run created.
"""

from erpsync.duplicate.engine import DuplicationResult, Numbers, duplicate
from erpsync.duplicate.plan import EDGE_MODES, LEVELS
from erpsync.duplicate.runs import Run, list_runs, lookup, undo

__all__ = [
    "EDGE_MODES",
    "LEVELS",
    "DuplicationResult",
    "Numbers",
    "Run",
    "duplicate",
    "list_runs",
    "lookup",
    "undo",
]
