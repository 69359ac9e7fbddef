"""Attendance: Graph notifications in, events, live roster, FHIR write-back, reports (SPEC D)."""
