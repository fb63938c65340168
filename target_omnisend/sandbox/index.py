"""Bitmap indexes of the sandbox's contacts, so a filtered page never walks every contact.

A contact's position is its creation number (1, 2, ...; its id is that number in hex), which is
also the default listing order (``createdAt``). An index is one bit per position: a tag's
bitmap has the bits of the contacts carrying it, a status's those whose channel status it is,
``all`` every contact. A filter is a :data:`Mask`: a function from a window number to the bits
of that window (``WINDOW_BITS`` positions as one Python int), so filters combine with ``&``,
``|`` and ``~`` a window at a time, and a page reads windows only until it holds enough
contacts: a tag of 10 members among a million costs about 120 window reads, a page of a tag
everybody carries one.

A bit costs an eighth of a byte per contact per tag or status, where a set of ids would cost
some 60 bytes per member.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

WINDOW_BITS = 8192
_WINDOW_BYTES = WINDOW_BITS // 8
Mask = Callable[[int], int]


class Bitmap:
    """A growable set of positions, one bit each."""

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = bytearray()

    def add(self, position: int) -> None:
        """Set the position's bit."""
        byte = position >> 3
        bits = self._bits
        if byte >= len(bits):
            bits.extend(bytes(byte - len(bits) + _WINDOW_BYTES))
        bits[byte] |= 1 << (position & 7)

    def discard(self, position: int) -> None:
        """Clear the position's bit."""
        byte = position >> 3
        if byte < len(self._bits):
            self._bits[byte] &= ~(1 << (position & 7)) & 0xFF

    def __contains__(self, position: int) -> bool:
        byte = position >> 3
        return byte < len(self._bits) and bool(self._bits[byte] >> (position & 7) & 1)

    def window(self, number: int) -> int:
        """The bits of positions ``number * WINDOW_BITS`` up to the next window, as an int."""
        start = number * _WINDOW_BYTES
        return int.from_bytes(self._bits[start : start + _WINDOW_BYTES], "little")

    def count(self) -> int:
        """How many positions are set."""
        return int.from_bytes(self._bits, "little").bit_count()


def empty(_number: int) -> int:
    """The mask of no position."""
    return 0


def both(left: Mask, right: Mask) -> Mask:
    """Positions in both masks."""
    return lambda number: left(number) & right(number)


def either(masks: list[Mask]) -> Mask:
    """Positions in any of the masks."""
    if len(masks) == 1:
        return masks[0]

    def union(number: int) -> int:
        bits = 0
        for mask in masks:
            bits |= mask(number)
        return bits

    return union


def without(universe: Mask, mask: Mask) -> Mask:
    """Positions of ``universe`` not in ``mask``."""
    return lambda number: universe(number) & ~mask(number)


def positions(mask: Mask, last: int, *, after: int | None, descending: bool) -> Iterator[int]:
    """The mask's positions from 1 to ``last``, strictly past ``after`` in the listing order."""
    if descending:
        start = last if after is None else min(last, after - 1)
        for number in range(start // WINDOW_BITS, -1, -1):
            bits = mask(number)
            top = start - number * WINDOW_BITS + 1  # bits at or above it are past the start
            if top < WINDOW_BITS:
                bits &= (1 << max(top, 0)) - 1
            base = number * WINDOW_BITS
            while bits:
                high = bits.bit_length() - 1
                yield base + high
                bits ^= 1 << high
    else:
        start = 1 if after is None else after + 1
        for number in range(start // WINDOW_BITS, last // WINDOW_BITS + 1):
            bits = mask(number)
            low = start - number * WINDOW_BITS
            if low > 0:
                bits &= ~((1 << low) - 1)
            base = number * WINDOW_BITS
            while bits:
                lowest = bits & -bits
                position = base + lowest.bit_length() - 1
                if position > last:
                    return
                yield position
                bits ^= lowest


def count(mask: Mask, last: int) -> int:
    """How many positions from 1 to ``last`` the mask holds."""
    return sum(mask(number).bit_count() for number in range(last // WINDOW_BITS + 1))
