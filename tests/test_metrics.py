"""Split-level metrics (UAR, macro-F1) and evaluation with metrics."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import recall_score

from mce.evaluation.combinations import Evaluation, evaluate_combinations
from mce.evaluation.metrics import CLASSIFICATION_METRICS, macro_f1, macro_recall
from mce.tasks import classification_utility, get_task


def _logits(predictions: list[int], classes: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predictions), classes).float()


def test_macro_recall_and_f1_match_hand_computed_values():
    targets = torch.tensor([0, 0, 1, 1, 2])
    outputs = _logits([0, 1, 1, 1, 0])
    # recall: class 0 1/2, class 1 2/2, class 2 0/1 -> (0.5 + 1 + 0) / 3
    assert macro_recall(outputs, targets) == pytest.approx(0.5)
    # F1: class 0 P=1/2 R=1/2 -> 1/2; class 1 P=2/3 R=1 -> 4/5; class 2 -> 0
    assert macro_f1(outputs, targets) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert macro_recall(_logits([2, 1, 0]), torch.tensor([2, 1, 0])) == 1.0
    assert macro_f1(_logits([2, 1, 0]), torch.tensor([2, 1, 0])) == 1.0


def test_classes_are_those_in_targets_or_predictions():
    # class 2 is never seen: left out; class 1 only predicted: recall 0 (no warning raised)
    targets = torch.tensor([0, 0])
    outputs = _logits([0, 1])
    assert macro_recall(outputs, targets) == pytest.approx((0.5 + 0.0) / 2)
    assert macro_f1(outputs, targets) == pytest.approx((2 / 3 + 0.0) / 2)
    assert macro_recall(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 0.0
    with pytest.raises(ValueError, match="predictions for"):
        macro_recall(_logits([0, 1]), torch.tensor([0, 1, 1]))


def test_evaluate_with_metrics_computes_them_per_combination_over_the_split():
    task = get_task("digits")
    torch.manual_seed(0)
    model = task.build_model()
    _, test = task.load(None)
    test = test.subset(torch.arange(100))
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(outputs: torch.Tensor, targets: torch.Tensor) -> float:
        seen[len(seen)] = (outputs, targets)
        return float(classification_utility(outputs, targets).mean())

    metrics = {**CLASSIFICATION_METRICS, "accuracy": record}
    evaluation = evaluate_combinations(model, task.utility, test, batch_size=32, metrics=metrics)
    plain = evaluate_combinations(model, task.utility, test, batch_size=32)
    assert isinstance(evaluation, Evaluation) and plain.metrics == {}
    assert evaluation.scores == plain.scores
    combos = ["image", "audio", "image+audio"]
    assert set(evaluation.metrics) == {"uar", "f1", "accuracy"}
    for values in evaluation.metrics.values():
        assert list(values) == [*combos, "average"]
        assert values["average"] == pytest.approx(sum(values[c] for c in combos) / 3)
        assert all(0.0 <= value <= 1.0 for value in values.values())
    # the metric saw every sample of each combination at once (the mean utility is the score)
    for combo in combos:
        assert evaluation.metrics["accuracy"][combo] == pytest.approx(evaluation.scores[combo])
    assert [len(targets) for _, targets in seen.values()] == [100, 100, 100]
    for i, combo in enumerate(combos):
        outputs, targets = seen[i]
        expected = recall_score(
            targets.numpy(), outputs.argmax(-1).numpy(), average="macro", zero_division=0
        )
        assert evaluation.metrics["uar"][combo] == pytest.approx(expected)
    assert evaluation.value("f1") == evaluation.metrics["f1"]["average"]
    assert evaluation.value() == evaluation.scores["average"]
