"""SMART App Launch 2.x, EHR-agnostic (requirements A1–A9), and the Epic profile (requirement A10)."""
