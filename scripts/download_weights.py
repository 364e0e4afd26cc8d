"""Download, list or verify the pretrained weight files; see gpen_fewshot/cli/weights.py or --help."""

from gpen_fewshot.cli.weights import main

if __name__ == "__main__":
    raise SystemExit(main())
