"""A clock the test sets by hand, for every rule that takes ``clock=`` (design rule 7)."""

from __future__ import annotations

from datetime import datetime


class Clock:
    """Returns ``now`` until the test moves it (``clock.now = …``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
