"""The few-shot study's headline table with the degraded input beside base and tuned (README), and the
identity routing's reach.

    python scripts/study_input_table.py docs/results/personalisation/confirm_fewshot_identity
    python scripts/study_input_table.py outputs/eval_a outputs/eval_b   # evaluate.py folders with others=

Reads ``persons/<name>/eval/metrics.json`` of every finished person of one or more study folders (as written
by ``scripts/fewshot_study.py``; a merged study names its sources in study.json), or the ``metrics.json`` of
evaluation folders, and prints, per level, the mean over persons of: PSNR, the dlib identity similarity to the
ground truth (not in any training loss: the headline), the MobileFaceNet similarity (in the loss of identity
recipes: "trained on"), and the fraction verified as the person by dlib against the person's reference, for
the input, the base prior and the tuned model, with the tuned - base difference (mean ± standard error over
persons). When the evaluations scored other people too (``others=``), a second table gives the share of the
person's own and of other people's degraded faces that ``restore.py``'s identity routing would give the
person's weights (``gpen_fewshot.evaluation.study_results``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpen_fewshot.cli.errors import user_error, user_errors_exit
from gpen_fewshot.evaluation.study_results import (
    PERSON_SET,
    evaluation_results,
    has_base_and_tuned,
    has_routing,
    input_table,
    routing_table,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", type=Path,
                        help="study folders of scripts/fewshot_study.py, or evaluate.py output folders")
    args = parser.parse_args(argv)
    with user_errors_exit((OSError, ValueError, KeyError)):  # unreadable or foreign metrics.json / study.json
        results = evaluation_results(args.studies)
        persons = [r[PERSON_SET] for r in results]
    if not results:
        return user_error("no finished evaluation (metrics.json, or persons/*/eval/metrics.json of a study) "
                          "in those folders", 1)
    headline, routing = has_base_and_tuned(persons), has_routing(results)
    if not headline and not routing:
        return user_error("those evaluations have neither base + tuned rows nor other people scored", 1)
    if headline:
        print(input_table(persons))
    if routing:
        print("\nIdentity routing (restore.py): share of degraded faces matched to the person\n")
        print(routing_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
