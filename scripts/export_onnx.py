"""Export a GPEN generator to ONNX and verify it; see gpen_fewshot/cli/export_onnx.py or --help."""

from gpen_fewshot.cli.export_onnx import main

if __name__ == "__main__":
    raise SystemExit(main())
