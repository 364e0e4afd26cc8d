"""Create GT/LR pairs from a folder of clean images; see gpen_fewshot/cli/degraded_pairs.py or --help."""

from gpen_fewshot.cli.degraded_pairs import main

if __name__ == "__main__":
    raise SystemExit(main())
