"""Pictures of how good a model is, drawn from the trainer's `evaluation.json` (numbers only: the trainer
never imports a plotting library) and from a model's version history.

Matplotlib's object API with its Agg canvas: no pyplot, so no global figure state and no display needed.
Each plot is a small PNG; `markdown_image` embeds one as a `data:` URI, which the Prefect UI's markdown
artifacts render and which never expires (no link to a bucket or a server that may be gone).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from mltp.trainer.spec import better

SCHEMA = 1  # the evaluation.json layout these plots read (mltp/trainer/evaluation.py writes it)
WIDTH_IN, HEIGHT_IN, DPI = 5.6, 3.8, 90
CHAMPION_COLOUR, HIGHLIGHT, MUTED = "#d62728", "#1f77b4", "#9ab7d3"


class Plot(NamedTuple):
    title: str
    png: bytes


class DrawnEvaluation(NamedTuple):
    """The trainer's evaluation data and its plots, drawn once for every artifact that shows them."""

    data: dict[str, Any] | None
    plots: list[Plot]


def draw(evaluation: dict[str, Any] | None) -> DrawnEvaluation:
    return DrawnEvaluation(evaluation, evaluation_plots(evaluation))


def evaluation_plots(evaluation: dict[str, Any] | None) -> list[Plot]:
    """Every plot the evaluation has data for, in reading order; none when there is no evaluation (a
    version registered before the trainer wrote one) or the trainer could not compute it."""
    if not evaluation or evaluation.get("error") or evaluation.get("schema") != SCHEMA:
        return []
    drawers: list[tuple[str, Callable[[Any, dict[str, Any]], None], bool]] = [
        ("Confusion matrix", _confusion_matrix, bool(evaluation.get("confusion_matrix"))),
        ("ROC curve", _roc, _has_curves(evaluation.get("roc"), "fpr")),
        ("Precision-recall curve", _precision_recall, _has_curves(evaluation.get("pr"), "recall")),
        ("Per-class precision, recall and F1", _per_class, bool(evaluation.get("per_class"))),
        ("Predicted against actual", _predicted_vs_actual, bool(evaluation.get("predicted_vs_actual"))),
        ("Residual quantiles", _residuals, bool(evaluation.get("residual_quantiles"))),
        (
            "Permutation importance",
            _importance,
            bool((evaluation.get("permutation_importance") or {}).get("features")),
        ),
        ("Grid candidates", _candidates, len(evaluation.get("candidates") or []) > 1),
    ]
    return [_render(title, draw, evaluation) for title, draw, has_data in drawers if has_data]


def history_plot(versions: list[dict[str, Any]], primary_metric: str, champion: int | None) -> Plot | None:
    """The primary metric over a model's versions, the champion marked; None with fewer than two."""
    points = [
        (version["version"], version["metrics"].get(primary_metric))
        for version in versions
        if version["metrics"].get(primary_metric) is not None
    ]
    if len(points) < 2:
        return None

    def draw(axes, _: Any) -> None:
        numbers, values = zip(*points, strict=True)
        axes.plot(numbers, values, marker="o", color=HIGHLIGHT)
        for number, value in points:
            if number == champion:
                axes.scatter([number], [value], s=160, color=CHAMPION_COLOUR, zorder=3, label="champion")
        axes.set_xticks(numbers)
        axes.set_xlabel("version")
        axes.set_ylabel(primary_metric)
        if champion in numbers:
            axes.legend(loc="best")

    return _render(f"{primary_metric} by version", draw, None)


def evaluation_note(evaluation: dict[str, Any] | None) -> str:
    """One line saying what the plots were computed on, or why there are none."""
    if evaluation is None:
        return (
            "No evaluation data: this model was trained before the trainer wrote evaluation.json "
            "(or by an older trainer)."
        )
    if evaluation.get("error"):
        return f"No evaluation data: the trainer could not compute it ({evaluation['error']})."
    if evaluation.get("schema") != SCHEMA:
        return (
            f"No plots: the evaluation data has layout {evaluation.get('schema')!r}, this mltp reads "
            f"{SCHEMA}: upgrade mltp."
        )
    scored = "out-of-fold predictions" if evaluation["source"] == "out-of-fold" else "the holdout"
    return f"Computed on {scored} ({evaluation['rows_scored']:,} rows)."


def markdown_section(drawn: DrawnEvaluation, extra: Sequence[Plot] = ()) -> list[str]:
    """The `## Evaluation` section of an artifact: the note, then every plot inline."""
    lines = ["## Evaluation", "", evaluation_note(drawn.data), ""]
    for plot in [*drawn.plots, *extra]:
        lines += [markdown_image(plot), ""]
    return lines


def markdown_image(plot: Plot) -> str:
    return f"![{plot.title}]({data_uri(plot)})"


def data_uri(plot: Plot) -> str:
    return "data:image/png;base64," + base64.b64encode(plot.png).decode()


def _render(title: str, draw: Callable[[Any, Any], None], data: Any) -> Plot:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    draw(axes, data)
    axes.set_title(title, fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})  # same data, same bytes
    return Plot(title, buffer.getvalue())


def _has_curves(curves: list[dict] | None, axis: str) -> bool:
    return any(curve.get(axis) for curve in curves or [])


def _confusion_matrix(axes, evaluation: dict[str, Any]) -> None:
    import numpy as np

    confusion = evaluation["confusion_matrix"]
    labels, matrix = confusion["labels"], np.array(confusion["matrix"])
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(labels))
    axes.set_xticks(ticks, labels, rotation=45 if len(labels) > 4 else 0, ha="right", fontsize=8)
    axes.set_yticks(ticks, labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    if len(labels) <= 12:
        brightest = matrix.max() or 1
        for row, col in np.ndindex(matrix.shape):
            colour = "white" if matrix[row, col] > brightest / 2 else "black"
            axes.text(col, row, str(matrix[row, col]), ha="center", va="center", color=colour, fontsize=8)


def _roc(axes, evaluation: dict[str, Any]) -> None:
    for curve in evaluation["roc"]:
        if curve.get("fpr"):
            axes.plot(curve["fpr"], curve["tpr"], label=f"{curve['class']} (AUC {_shown(curve['auc'])})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.legend(loc="lower right", fontsize=7)


def _precision_recall(axes, evaluation: dict[str, Any]) -> None:
    for curve in evaluation["pr"]:
        if curve.get("recall"):
            label = f"{curve['class']} (AP {_shown(curve['average_precision'])})"
            axes.plot(curve["recall"], curve["precision"], label=label)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_ylim(0, 1.05)
    axes.legend(loc="lower left", fontsize=7)


def _per_class(axes, evaluation: dict[str, Any]) -> None:
    rows = evaluation["per_class"][:20]
    positions, width = range(len(rows)), 0.27
    for offset, metric in zip((-width, 0.0, width), ("precision", "recall", "f1"), strict=True):
        heights = [row[metric] or 0 for row in rows]
        axes.bar([p + offset for p in positions], heights, width=width, label=metric)
    rotation = 45 if len(rows) > 4 else 0
    axes.set_xticks(positions, [row["class"] for row in rows], rotation=rotation, ha="right")
    axes.set_ylim(0, 1.05)
    axes.legend(loc="lower right", fontsize=7)


def _predicted_vs_actual(axes, evaluation: dict[str, Any]) -> None:
    sample = evaluation["predicted_vs_actual"]
    axes.scatter(sample["actual"], sample["predicted"], s=6, alpha=0.5, color=HIGHLIGHT)
    low = min(min(sample["actual"]), min(sample["predicted"]))
    high = max(max(sample["actual"]), max(sample["predicted"]))
    axes.plot([low, high], [low, high], linestyle=":", color="grey")
    axes.set_xlabel(f"actual ({sample['rows_sampled']:,} rows sampled)")
    axes.set_ylabel("predicted")


def _residuals(axes, evaluation: dict[str, Any]) -> None:
    quantiles = sorted((float(q), value) for q, value in evaluation["residual_quantiles"].items())
    axes.plot([q for q, _ in quantiles], [value for _, value in quantiles], marker="o", color=HIGHLIGHT)
    axes.axhline(0, linestyle=":", color="grey")
    axes.set_xlabel("quantile")
    axes.set_ylabel("residual (actual - predicted)")


def _importance(axes, evaluation: dict[str, Any]) -> None:
    importance = evaluation["permutation_importance"]
    features = list(reversed(importance["features"]))
    axes.barh(
        [feature["name"] for feature in features],
        [feature["mean"] for feature in features],
        xerr=[feature["std"] for feature in features],
        color=HIGHLIGHT,
    )
    axes.tick_params(axis="y", labelsize=7)
    axes.set_xlabel(f"drop in {importance['scoring']} when shuffled ({importance['repeats']} repeats)")


def _candidates(axes, evaluation: dict[str, Any]) -> None:
    metric = evaluation["primary_metric"]
    values = [candidate["metrics"].get(metric) for candidate in evaluation["candidates"]]
    best = None
    for value in values:
        best = value if better(metric, value, best) else best
    colours = [HIGHLIGHT if value == best else MUTED for value in values]
    numbers = range(1, len(values) + 1)
    axes.bar(numbers, [value or 0 for value in values], color=colours)
    defined = [value for value in values if value is not None]
    if defined:  # zoomed on the scores: candidates often differ in the third decimal
        margin = (max(defined) - min(defined)) * 0.2 or abs(max(defined)) * 0.05 or 0.05
        axes.set_ylim(min(defined) - margin, max(defined) + margin)
    axes.set_xticks(numbers if len(values) <= 20 else numbers[:: len(values) // 10])
    axes.set_xlabel("candidate (the best in dark blue; parameters in the table)")
    axes.set_ylabel(metric)


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
