"""Fixtures of the Microsoft sign-in tests (see entra_helpers for the constants)."""

from __future__ import annotations

from entra_helpers import certificate, clock, fake

__all__ = ["certificate", "clock", "fake"]
