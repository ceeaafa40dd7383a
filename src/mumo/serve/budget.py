"""The pixel budget of the server: how many decoded pixels all requests together may hold at once.

A small upload can be a large image (a 150 KiB PNG of 6300 x 6300 pixels decodes to ~160 MB as RGB), and
the server decodes in up to 40 request threads at once. Each upload takes its pixel count from one shared
budget before decoding and gives it back after, errors included; when the budget stays full for
``wait_s``, the upload is refused with :class:`BudgetFull` (the server answers 503 with Retry-After) instead
of waiting for ever, so memory stays bounded by the budget, not by the number of clients.

    budget = PixelBudget(80_000_000, wait_s=1.0)
    with budget.hold(width * height):      # raises BudgetFull if it does not fit in time
        image.load()
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Iterator

from mumo.errors import MumoError


class BudgetFull(MumoError):
    """The pixels asked for did not fit in the budget within its waiting time."""


class PixelBudget:
    """A count of pixels shared by threads (see the module docstring).

    Args:
        capacity: pixels that may be held at once, over all holders.
        wait_s: how long :meth:`hold` waits for room before it raises :class:`BudgetFull`.
    """

    def __init__(self, capacity: int, wait_s: float) -> None:
        self.capacity, self.wait_s = capacity, wait_s
        self.used = 0  # pixels held now
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Take ``pixels`` from the budget for the duration of the block (waiting up to ``wait_s`` for room),
        and give them back when it ends, however it ends."""
        if pixels > self.capacity:
            raise ValueError(f"{pixels:,} pixels are more than the whole budget of {self.capacity:,}")
        with self._changed:
            if not self._changed.wait_for(lambda: self.used + pixels <= self.capacity, timeout=self.wait_s):
                raise BudgetFull(
                    f"{self.used:,} of {self.capacity:,} pixels are being decoded; {pixels:,} more do not fit"
                )
            self.used += pixels
        try:
            yield
        finally:
            with self._changed:
                self.used -= pixels
                self._changed.notify_all()


def return_large_blocks_to_the_os(threshold: int = 2**20) -> bool:
    """Make glibc's malloc give every block of ``threshold`` bytes or more its own mapping, freed to the OS
    on release; returns whether it could (glibc only). For a process that decodes large images in many
    threads: by default glibc raises that threshold after the first large frees, and later decodes land in
    per-thread heaps that never shrink, so peak memory grows with the threads that ever decoded rather than
    with the budget (measured: 50 uploads of 40 M pixels added 350-850 MiB instead of ~340)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3  # glibc's mallopt parameter; setting it also stops the dynamic adjustment
        return bool(libc.mallopt(m_mmap_threshold, threshold))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
