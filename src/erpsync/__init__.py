"""erpsync: keep an ERP's SQLite PCs and its MariaDB or PostgreSQL server in sync; deep-copy records."""

from erpsync.db import Database, create_server_database, open_database, parse_url
from erpsync.errors import ErpSyncError

__version__ = "0.1.0"

__all__ = ["Database", "ErpSyncError", "__version__", "create_server_database", "open_database", "parse_url"]
