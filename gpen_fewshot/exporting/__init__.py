"""Implementation of :mod:`gpen_fewshot.export` (import from there)."""
