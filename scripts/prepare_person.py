"""Find, align and vet one person's photos; see gpen_fewshot/cli/prepare_person.py or --help."""

from gpen_fewshot.cli.prepare_person import main

if __name__ == "__main__":
    raise SystemExit(main())
