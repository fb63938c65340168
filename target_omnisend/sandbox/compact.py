"""Stored values as bytes: MessagePack, or pickle for what MessagePack cannot hold.

The sandbox keeps each contact, each waiting batch's items and each processed batch's records
as bytes (a fraction of the memory of the dicts they decode to, and nothing for the garbage
collector to walk). JSON bodies may hold what MessagePack cannot encode (integers beyond 64
bits); those values are pickled. A pickle starts with ``0x80 0x05``, which as MessagePack is an
empty map followed by more bytes, something ``encode`` never writes.
"""

from __future__ import annotations

import pickle
from typing import Any

import msgspec

_PICKLE = b"\x80\x05"
_msgpack_encode = msgspec.msgpack.Encoder().encode
_msgpack_decode = msgspec.msgpack.Decoder().decode


def encode(value: Any) -> bytes:
    """The value as bytes."""
    try:
        return _msgpack_encode(value)
    except (OverflowError, TypeError, msgspec.EncodeError):
        return pickle.dumps(value, protocol=5)


def decode(data: bytes) -> Any:
    """The value ``encode`` wrote (a fresh copy)."""
    if data[:2] == _PICKLE:
        return pickle.loads(data)  # noqa: S301 - bytes this process wrote itself
    return _msgpack_decode(data)
