"""SMART App Launch 2.x, EHR-agnostic (SPEC A1–A9), and the Epic profile (A10)."""
