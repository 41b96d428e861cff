"""Holdout groups: which customers a rule's action is withheld from, decided by a stable hash.

A customer's *bucket* under a salt is a whole number from 0 to 9,999::

    message = UTF-8(salt) + b"\\x00" + id_bytes(customer_id)
    bucket  = int.from_bytes(SHA-256(message)[:8], "big") % 10_000

where ``id_bytes`` is

- for an integer id (any integer dtype): its decimal digits in ASCII, ``-`` before a
  negative one, no ``+``, no leading zeros (``12347`` -> ``b"12347"``, ``-5`` -> ``b"-5"``);
- for a float id (Parquet, NDJSON and pandas often store integer ids as floats): the
  integer's text when the value is a whole number (``12347.0`` -> ``b"12347"``, so an id
  column that turns from float to integer keeps every customer's bucket); any other
  float (``1.5``, beyond 2^53) is refused;
- for a text id (String, Categorical, Enum): its UTF-8 bytes exactly as they are (no
  trimming, no case folding, no Unicode normalisation).

The salt is text of at least one character without a NUL character, so the message splits
back into salt and id at its first NUL byte: two different (salt, id) pairs never give the
same message. A customer is in the holdout of share ``s`` when ``bucket < s * 10_000``; so
raising the share only adds customers, and a new salt draws a new, independent bucket for
everyone. :func:`bucket_of` is the definition in plain Python (``hashlib``); the tests check
the vectorised :func:`bucket_expr` against it and against fixed vectors. Polars' own ``hash``
is not used: it is documented as not stable across Polars versions. Why SHA-256 and this
encoding: ``docs/decisions/0015-holdout-hash.md``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import polars as pl

from .errors import DataError

__all__ = ["BUCKETS", "Holdout", "bucket_of", "bucket_expr", "buckets", "check_ids", "id_bytes", "control_share"]

#: Buckets a salt deals customers into; a share is a whole number of them.
BUCKETS = 10_000

#: Floats are exact integers up to 2^53; beyond that two ids could be the same float.
_FLOAT_EXACT = 2.0 ** 53


@dataclass(frozen=True)
class Holdout:
    """A holdout: ``share`` of the customers (a multiple of 1/10,000) by their bucket under ``salt``."""

    share: float
    salt: str
    line: int = 0

    @property
    def threshold(self) -> int:
        """Buckets below this are held out: ``round(share * 10_000)``."""
        return round(self.share * BUCKETS)

    def to_dict(self) -> dict[str, object]:
        return {"share": self.share, "salt": self.salt, "buckets": self.threshold}


def control_share(*holdouts: Holdout | None) -> float:
    """The share of a rule's customers expected in control under independent holdouts (rule's, playbook's).

    A customer is in control when any of them holds them out; salts differ, so the
    buckets are independent: ``1 - prod(1 - share)``.

    >>> control_share(Holdout(0.1, "a"), Holdout(0.05, "b"))
    0.145
    >>> control_share(None, Holdout(0.2, "b"))
    0.2
    """
    keep = 1.0
    for h in holdouts:
        if h is not None:
            keep *= 1 - h.threshold / BUCKETS
    return round(1 - keep, 12)


def id_bytes(customer_id: object) -> bytes:
    """The bytes of a customer id in the hashed message (see the module's docstring).

    >>> id_bytes(12347), id_bytes(-5), id_bytes(12347.0), id_bytes("C-01 é")
    (b'12347', b'-5', b'12347', b'C-01 \\xc3\\xa9')
    """
    if isinstance(customer_id, bool):
        raise DataError(f"customer id {customer_id!r}: a holdout needs whole numbers or text as customer ids")
    if isinstance(customer_id, int):
        return str(customer_id).encode("ascii")
    if isinstance(customer_id, float):
        if not math.isfinite(customer_id) or customer_id != int(customer_id) or abs(customer_id) > _FLOAT_EXACT:
            raise DataError(f"customer id {customer_id!r}: a holdout needs whole numbers or text as customer ids")
        return str(int(customer_id)).encode("ascii")
    if isinstance(customer_id, str):
        return customer_id.encode("utf-8")
    raise DataError(f"customer id {customer_id!r} ({type(customer_id).__name__}): a holdout needs whole numbers or "
                    f"text as customer ids")


def bucket_of(customer_id: object, salt: str) -> int:
    """The bucket (0..9,999) of one customer under ``salt``: the definition, in plain Python.

    >>> bucket_of(12347, "win-back-2026-11")
    5875
    """
    message = salt.encode("utf-8") + b"\x00" + id_bytes(customer_id)
    return int.from_bytes(hashlib.sha256(message).digest()[:8], "big") % BUCKETS


def _id_text(ids: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.String:
        return ids
    if dtype == pl.Categorical or isinstance(dtype, pl.Enum):
        return ids.cast(pl.String)
    if dtype.is_integer():
        return ids.cast(pl.String)  # decimal digits, '-' for negatives: as Python's str(int)
    if dtype.is_float():
        return ids.cast(pl.Int64).cast(pl.String)  # whole numbers only: checked by check_ids
    raise DataError(f"customer_id is of type {dtype}: a holdout needs whole numbers or text as customer ids")


def check_ids(ids: pl.Series) -> None:
    """Refuse ids a holdout cannot hash: a type other than integers, floats and text, or float ids that are
    not whole numbers (their integer text would not be the id)."""
    _id_text(pl.col("customer_id"), ids.dtype)
    if not ids.dtype.is_float():
        return
    bad = ids.filter(~(ids.is_finite() & (ids == ids.floor()) & (ids.abs() <= _FLOAT_EXACT)))
    if bad.len():
        raise DataError(f"customer_id {bad[0]!r}: a holdout needs whole numbers or text as customer ids "
                        f"({bad.len():,} of {ids.len():,} ids are not whole numbers up to 2^53)")


def bucket_expr(ids: pl.Expr, dtype: pl.DataType, salt: str) -> pl.Expr:
    """The bucket (UInt64, 0..9,999) of each id under ``salt``: :func:`bucket_of`, vectorised.

    SHA-256 is computed by the ``polars-hash`` plugin (Rust, no Python per row); the first
    16 hexadecimal digits of the digest are its first 8 bytes, big-endian.
    """
    import polars_hash as plh

    if not isinstance(salt, str) or not salt or "\x00" in salt:
        raise ValueError("a salt is text of at least one character without NUL")
    message = plh.concat_str([pl.lit(salt + "\x00"), _id_text(ids, dtype)])
    digest = message.chash.sha2_256()
    return digest.str.slice(0, 16).str.to_integer(base=16, dtype=pl.UInt64) % BUCKETS


def buckets(ids: pl.Series, salt: str, *, checked: bool = False) -> pl.Series:
    """:func:`bucket_expr` over a Series of ids (floats checked first unless ``checked``), named ``bucket``.

    Run by Polars' streaming engine, which cuts a long Series into morsels and hashes them on
    every thread side by side (SHA-256 is the whole cost here); every id is hashed on its own,
    so the result is the same, in the same order, whatever the count of threads.
    """
    if not checked:
        check_ids(ids)
    return (pl.LazyFrame({"id": ids}).select(bucket_expr(pl.col("id"), ids.dtype, salt).alias("bucket"))
            .collect(engine="streaming").to_series())
