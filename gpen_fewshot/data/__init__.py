"""Data: image I/O, person preparation, degradations and the Lightning datamodules."""
