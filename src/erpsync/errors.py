"""The one exception hierarchy of erpsync.

Every error erpsync raises on purpose is an ``ErpSyncError`` carrying a message
and a hint (what to try next). Both are English message ids with parameters,
rendered in the user's language when printed (see ``erpsync.i18n``).
"""

from __future__ import annotations

from erpsync.i18n import tr


class ErpSyncError(Exception):
    """Base class: a condition the user can act on, with a hint on what to try."""

    default_hint = "run again with --debug to see the SQL and the traceback"

    def __init__(self, message: str, hint: str | None = None, /, **params: object) -> None:
        self.template = message
        self.hint_template = hint if hint is not None else self.default_hint
        self.params = params
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The message in the current language."""
        return tr(self.template, **self.params)

    @property
    def hint(self) -> str:
        """What to try next, in the current language."""
        return tr(self.hint_template, **self.params) if self.hint_template else ""

    def __str__(self) -> str:
        return self.message


class BadUrl(ErpSyncError):
    """A database was named by something that is neither a usable URL nor a file path."""


class UnsupportedEngine(BadUrl):
    """The URL names an engine erpsync does not work with."""


class DatabaseNotFound(ErpSyncError):
    """The SQLite file or the server-side database does not exist."""


class ConnectionFailed(ErpSyncError):
    """The database server cannot be reached."""


class AuthenticationFailed(ErpSyncError):
    """The server refused the user name or password."""


class DatabaseError(ErpSyncError):
    """The database reported an error erpsync has no more specific name for."""


class SchemaMismatch(ErpSyncError):
    """Tables exist with a shape other than the one expected."""


class SchemaMissing(ErpSyncError):
    """Tables that a command needs are not there."""


class InvalidArgument(ErpSyncError):
    """A value given by the user is out of range or malformed."""


class NotFound(ErpSyncError):
    """A row, run or table named by the user does not exist."""


class ChangedSinceRun(ErpSyncError):
    """Rows a duplication run created were edited, added to or deleted since."""
