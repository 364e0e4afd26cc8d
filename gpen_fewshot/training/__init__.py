"""Few-shot GPEN training: Lightning module, staged freezing, schedules, EMA, callbacks and the pipeline."""
