"""The few-shot study's headline table with the degraded input beside base and tuned (README).

    python scripts/study_input_table.py docs/results/personalisation/confirm_fewshot_identity

Reads ``persons/<name>/eval/metrics.json`` of every finished person of one or more study folders (as written
by ``scripts/fewshot_study.py``; a merged study names its sources in study.json) and prints, per level, the
mean over persons of: PSNR, the dlib identity similarity to the ground truth (not in any training loss: the
headline), the MobileFaceNet similarity (in the loss of identity recipes: "trained on"), and the fraction
verified as the person by dlib against the person's reference, for the input, the base prior and the tuned
model, with the tuned - base difference (mean ± standard error over persons).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpen_fewshot.cli.errors import user_error
from gpen_fewshot.evaluation.study import input_table, study_person_metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", type=Path, help="study folders of scripts/fewshot_study.py")
    args = parser.parse_args(argv)
    results = study_person_metrics(args.studies)
    if not results:
        return user_error("no finished person (persons/*/eval/metrics.json) in those folders", 1)
    print(input_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
