"""Implementation of :mod:`gpen_fewshot.restore` (import from there)."""
