"""Attendance: Graph notifications in, events, live roster, FHIR write-back, reports.

Requirements D1–D7 (docs/design/requirements.md); the writers are in :mod:`.writers`.
"""
