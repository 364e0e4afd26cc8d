"""Export a pretrained prior as bundled safetensors files; see gpen_fewshot/cli/export_prior.py or --help."""

from gpen_fewshot.cli.export_prior import main

if __name__ == "__main__":
    raise SystemExit(main())
