"""An in-memory NonceStore with the protocol's semantics, for the A10 tests."""

from __future__ import annotations

from datetime import datetime


class MemoryNonces:
    """``remember_once`` is True once per (namespace, key) until it expires; keys are recorded."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], datetime] = {}
        self.hits: dict[str, int] = {}

    async def remember_once(self, namespace: str, key: str, *, expires_at: datetime) -> bool:
        if (namespace, key) in self.seen:
            return False
        self.seen[(namespace, key)] = expires_at
        return True

    async def count_hit(self, bucket: str, *, window_start: datetime) -> int:
        slot = f"{bucket}@{window_start.isoformat()}"
        self.hits[slot] = self.hits.get(slot, 0) + 1
        return self.hits[slot]
