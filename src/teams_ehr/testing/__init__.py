"""Fakes for integrators and our own tests: FakeEhr, FakeGraph, FakeEntra (SPEC E1).

Importable without pytest; each fake is an ``httpx.MockTransport`` handler and an ASGI app."""
