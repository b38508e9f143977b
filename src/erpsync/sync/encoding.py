"""One canonical text for every value, whatever engine it was read from.

The same decimal reads as ``Decimal('12.50')`` from MariaDB and PostgreSQL and
as a float from a SQLite NUMERIC column; a DATETIME reads with microseconds from
SQLite and PostgreSQL and without them from MariaDB's default ``DATETIME(0)``.
Comparing rows across engines (verify) and deriving global ids from natural
keys both need one spelling per value: decimals at the column's scale,
date-times to the second, text as is, bytes in hex.
"""

from __future__ import annotations

import decimal
import hashlib
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy.sql import sqltypes
from sqlalchemy.types import TypeEngine

NULL = "\x00"
Encoder = Callable[[Any], str]
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
"""Decimals of any size spelled exactly: the default context rounds to 28 digits (or refuses)."""


def encoder(column_type: TypeEngine[Any]) -> Encoder:
    """The canonical encoder for values of ``column_type``."""
    if isinstance(column_type, sqltypes.Boolean):
        return lambda v: NULL if v is None else ("1" if v else "0")
    if isinstance(column_type, sqltypes.Integer):
        return lambda v: NULL if v is None else str(int(v))
    if isinstance(column_type, sqltypes.Float):
        return lambda v: NULL if v is None else repr(float(v))
    if isinstance(column_type, sqltypes.Numeric):
        scale = column_type.scale
        quantum = Decimal(1).scaleb(-scale) if scale is not None else None

        def decimal_text(v: Any) -> str:
            if v is None:
                return NULL
            d = v if isinstance(v, Decimal) else Decimal(str(v))
            return str(d.quantize(quantum, context=_EXACT) if quantum is not None else d.normalize(_EXACT))

        return decimal_text
    if isinstance(column_type, sqltypes.DateTime):
        return _datetime_text
    if isinstance(column_type, sqltypes.Date):
        return lambda v: NULL if v is None else _as_date(v).isoformat()
    if isinstance(column_type, sqltypes.Time):
        return lambda v: NULL if v is None else str(v.replace(microsecond=0) if isinstance(v, time) else v)
    if isinstance(column_type, sqltypes._Binary):
        return lambda v: NULL if v is None else bytes(v).hex()
    return _any_text


def _datetime_text(v: Any) -> str:
    if v is None:
        return NULL
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    if isinstance(v, datetime):
        return v.replace(microsecond=0, tzinfo=None).isoformat(sep=" ")
    return str(v)


def _as_date(v: Any) -> date:
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    return date.fromisoformat(str(v)[:10])


def _any_text(v: Any) -> str:
    if v is None:
        return NULL
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    if isinstance(v, Decimal):
        return str(v.normalize(_EXACT))
    return str(v)


def row_text(encoders: Sequence[Encoder], values: Sequence[Any]) -> str:
    """One row as canonical text: the encoded values joined by a separator no value holds."""
    return "\x1f".join(encode(v) for encode, v in zip(encoders, values, strict=True))


def row_hash(text: str) -> int:
    """A 64-bit hash of a row's canonical text (summed per chunk by verify)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def natural_gid(table_key: str, key_text: str) -> str:
    """The global id of a row whose primary key is natural: the same on every node."""
    digest = hashlib.blake2b(f"{table_key}\x1e{key_text}".encode(), digest_size=16).hexdigest()
    return "n" + digest[1:]
