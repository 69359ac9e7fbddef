"""Thin framework adapters (Flask, Starlette/FastAPI); never imported by the core."""
