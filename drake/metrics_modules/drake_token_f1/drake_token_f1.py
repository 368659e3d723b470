"""DRAKE token F1 as a local `evaluate` module, delegating to drake.metrics (identical numbers).

Load it offline with ``evaluate.load("<path>/drake_token_f1")``. Per-example token-set F1 on normalised
words, averaged over examples: tokenizer-independent, unlike the official micro-summed token-id F1.
"""

import datasets
import evaluate

from drake.metrics import score_task

_KWARGS = """
Args:
    predictions (list[str]): generated answers.
    references (list[str]): gold answers.
Returns:
    token_f1 (float): mean over examples of the token-set F1 between prediction and reference.
"""


class DrakeTokenF1(evaluate.Metric):
    """Per-example token-set F1 on lower-cased, punctuation-stripped words, the same as `drake run`."""

    def _info(self):
        return evaluate.MetricInfo(
            description="DRAKE open-answer token F1 (drake.metrics.token_f1).",
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return {"token_f1": score_task("token_f1", list(predictions), list(references))["score"]}
