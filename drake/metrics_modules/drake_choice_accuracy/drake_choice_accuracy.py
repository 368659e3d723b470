"""DRAKE choice accuracy as a local `evaluate` module, delegating to drake.metrics (identical numbers).

Load it offline with ``evaluate.load("<path>/drake_choice_accuracy")``; pass the options of each example
as ``choices=[[...], ...]`` to ``compute`` (a keyword, not a streamed input, because some tasks have none).
"""

import datasets
import evaluate

from drake.metrics import score_task

_KWARGS = """
Args:
    predictions (list[str]): generated answers.
    references (list[str]): gold answers (an option text, or its letter for lettered options).
    choices (list[list[str]] | None): the options of each example; None scores exact normalised match.
Returns:
    choice_accuracy (float): mean over examples of 1.0 when the parsed option is the gold option.
"""


class DrakeChoiceAccuracy(evaluate.Metric):
    """Robust option parsing (whole words, longest match) and exact scoring, the same as `drake run`."""

    def _info(self):
        return evaluate.MetricInfo(
            description="DRAKE multiple-choice accuracy (drake.metrics.choice_accuracy).",
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, choices=None):
        result = score_task("choice_accuracy", list(predictions), list(references), choices)
        return {"choice_accuracy": result["score"]}
