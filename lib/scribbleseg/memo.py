"""A content-keyed memo for per-image maps that are a pure function of an image or label map.

Why by hand: ``functools.lru_cache`` keys by argument identity / hash and bounds entries, not bytes; numpy
arrays are unhashable. Here a key is (the array's shape, dtype, BLAKE2b digest of its bytes) plus the settings
that the map depends on, and the budget is in bytes (least recently used evicted first). A hit returns exactly
what recomputing would, so a memo enters no experiment key and needs no invalidation. Thread-safe (DataLoader
workers are processes, each with its own memo; threads share one).

Used by CDSP's distance maps (:func:`scribbleseg.cdsp.distance_maps.distance_maps`): computed once per label
map, then every later epoch and every later run in the process on the same labels reuses it.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np


def content_key(array: np.ndarray, *settings) -> tuple:
    """(shape, dtype, digest of the bytes, *settings) of ``array``."""
    array = np.ascontiguousarray(array)
    return (array.shape, str(array.dtype), hashlib.blake2b(array.data, digest_size=16).digest(), *settings)


class ContentMemo:
    """get(key, compute) -> compute()'s array, memoised under ``key`` (see :func:`content_key`).

    Args:
        budget: bytes the stored arrays may take; least recently used entries go first beyond it.
        encode, decode: how an array is stored and read back (default: stored as it is; a copy is returned, so
            callers may write to it). They must round-trip exactly.
    """

    def __init__(self, budget: int = 256 * 2**20, encode: Callable | None = None, decode: Callable | None = None):
        self.budget = budget
        self.encode = encode or (lambda a: a.copy())
        self.decode = decode or (lambda a: a.copy())
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._stats = {"hits": 0, "misses": 0, "bytes": 0}

    def get(self, key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            stored = self._items.get(key)
            if stored is not None:
                self._items.move_to_end(key)
                self._stats["hits"] += 1
        if stored is not None:
            return self.decode(stored)
        value = compute()
        stored = self.encode(value)
        with self._lock:
            self._stats["misses"] += 1
            if key not in self._items:
                self._items[key] = stored
                self._stats["bytes"] += stored.nbytes
            while self._stats["bytes"] > self.budget and self._items:
                self._stats["bytes"] -= self._items.popitem(last=False)[1].nbytes
        return value

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        with self._lock:
            self._items.clear()
            self._stats.update(hits=0, misses=0, bytes=0)

    def info(self) -> dict:
        """{"entries", "bytes", "hits", "misses"}."""
        with self._lock:
            return {"entries": len(self._items), **self._stats}
