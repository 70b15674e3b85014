"""The evaluation plots and the model card, in process: every plot the data allows decodes as a PNG, the
card holds every section and its images, and a version without evaluation data gets a card without
plots and a note (moto's in-process mock for the registry)."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from html.parser import HTMLParser

import pytest
from PIL import Image

from mltp import registry
from mltp.evaluation_plots import draw, evaluation_note, evaluation_plots, history_plot, markdown_section
from mltp.model_card import build_card
from mltp.model_card_html import render_card
from mltp.s3_json import put_json
from tests.test_registry import small_model_bytes

CARD_SECTIONS = ("summary", "metrics", "evaluation", "dataset", "signature", "lineage", "history")
CLASSIFICATION_PLOTS = [
    "Confusion matrix",
    "ROC curve",
    "Precision-recall curve",
    "Per-class precision, recall and F1",
    "Permutation importance",
    "Grid candidates",
]
REGRESSION_PLOTS = [
    "Predicted against actual",
    "Residual quantiles",
    "Permutation importance",
    "Grid candidates",
]


def classification_evaluation() -> dict:
    classes = ["setosa", "versicolor", "virginica"]
    return {
        "schema": 1,
        "task": "classification",
        "source": "holdout",
        "rows_scored": 30,
        "primary_metric": "accuracy",
        "seconds": 0.1,
        "classes": classes,
        "confusion_matrix": {"labels": classes, "matrix": [[10, 0, 0], [0, 9, 1], [0, 2, 8]]},
        "per_class": [
            {"class": c, "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10} for c in classes
        ],
        "roc": [{"class": c, "auc": 0.95, "fpr": [0, 0.1, 1], "tpr": [0, 0.9, 1]} for c in classes],
        "pr": [
            {"class": c, "average_precision": 0.9, "recall": [0, 0.9, 1], "precision": [1, 0.9, 0.3]}
            for c in classes
        ],
        "permutation_importance": {
            "scoring": "accuracy",
            "rows": 30,
            "repeats": 3,
            "features": [
                {"name": "petal <width>", "mean": 0.4, "std": 0.05},
                {"name": "x", "mean": 0, "std": 0},
            ],
            "skipped": [],
        },
        "candidates": [
            {"params": {"max_depth": 2}, "metrics": {"accuracy": 0.9}},
            {"params": {"max_depth": 4}, "metrics": {"accuracy": None}},
        ],
    }


def regression_evaluation() -> dict:
    return {
        "schema": 1,
        "task": "regression",
        "source": "out-of-fold",
        "rows_scored": 442,
        "primary_metric": "rmse",
        "seconds": 0.1,
        "predicted_vs_actual": {"actual": [1.0, 2.0, 3.0], "predicted": [1.5, 2.0, 2.0], "rows_sampled": 3},
        "residual_quantiles": {"0.0": -0.5, "0.5": 0.0, "1.0": 1.0},
        "permutation_importance": {
            "scoring": "r2",
            "rows": 442,
            "repeats": 3,
            "features": [{"name": "bmi", "mean": 0.3, "std": 0.02}],
            "skipped": [],
        },
        "candidates": [
            {"params": {"alpha": 1}, "metrics": {"rmse": 3.0}},
            {"params": {}, "metrics": {"rmse": 2}},
        ],
    }


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


@pytest.mark.parametrize(
    ("evaluation", "titles"),
    [(classification_evaluation(), CLASSIFICATION_PLOTS), (regression_evaluation(), REGRESSION_PLOTS)],
)
def test_every_plot_the_data_allows_is_a_png(evaluation, titles) -> None:
    plots = evaluation_plots(evaluation)
    assert [plot.title for plot in plots] == titles
    for plot in plots:
        image = decoded(plot.png)
        assert image.format == "PNG" and image.width > 300 and image.height > 200
        assert len(image.convert("L").getcolors(256)) > 10, f"{plot.title} is blank"


def test_the_same_data_draws_the_same_bytes() -> None:
    assert evaluation_plots(regression_evaluation()) == evaluation_plots(regression_evaluation())


def test_no_data_no_plots_and_a_note_saying_why() -> None:
    assert evaluation_plots(None) == [] and evaluation_plots({"error": "ValueError: boom"}) == []
    assert "trained before" in evaluation_note(None)
    assert "ValueError: boom" in evaluation_note({"error": "ValueError: boom"})
    assert evaluation_note(regression_evaluation()) == "Computed on out-of-fold predictions (442 rows)."
    from mltp import evaluation_plots as reader
    from mltp.trainer import evaluation as writer

    assert reader.SCHEMA == writer.SCHEMA  # the trainer writes the layout the plots read
    newer = {**regression_evaluation(), "schema": 2}  # written by a newer trainer than this reader
    assert evaluation_plots(newer) == [] and "upgrade mltp" in evaluation_note(newer)
    one_candidate = {
        **classification_evaluation(),
        "candidates": [{"params": {}, "metrics": {"accuracy": 1}}],
    }
    assert "Grid candidates" not in [plot.title for plot in evaluation_plots(one_candidate)]


def test_history_marks_the_champion_and_needs_two_versions() -> None:
    versions = [{"version": n, "metrics": {"r2": 0.5 + n / 10}} for n in (1, 2, 3)]
    plot = history_plot(versions, "r2", champion=2)
    assert plot.title == "r2 by version"
    red = decoded(plot.png).convert("RGB").getcolors(1_000_000)
    assert any(colour == (214, 39, 40) for _, colour in red), "the champion's red marker is missing"
    assert history_plot(versions[:1], "r2", champion=1) is None
    assert history_plot([{"version": 1, "metrics": {}}, {"version": 2, "metrics": {}}], "r2", None) is None


def test_the_markdown_section_embeds_each_plot_as_a_data_uri() -> None:
    text = "\n".join(markdown_section(draw(classification_evaluation())))
    uris = re.findall(r"!\[[^\]]+\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    assert len(uris) == len(CLASSIFICATION_PLOTS)
    for uri in uris:
        decoded(base64.b64decode(uri))
    assert "No evaluation data" in "\n".join(markdown_section(draw(None)))


class CardParser(HTMLParser):
    """What a reader of the card sees: the sections, the images and every external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.sections, self.images, self.external = [], [], []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("section", "header") and found.get("id"):
            self.sections.append(found["id"])
        if tag == "img":
            self.images.append(found)
        for name in ("src", "href"):
            if found.get(name) and not found[name].startswith(("data:", "#")):
                self.external.append(found[name])
        if tag in ("script", "link", "iframe", "object"):
            self.external.append(tag)


def parse_card(html: str) -> CardParser:
    parser = CardParser()
    parser.feed(html)
    parser.close()
    return parser


def card_images(parser: CardParser) -> dict[str, Image.Image]:
    return {
        image["alt"]: decoded(base64.b64decode(image["src"].removeprefix("data:image/png;base64,")))
        for image in parser.images
    }


@pytest.fixture
def models(mock_clients):
    s3 = mock_clients("s3")
    for bucket in ("models", "data"):
        s3.create_bucket(Bucket=bucket)
    return mock_clients


def register(clients, name: str, evaluation: dict | None, accuracy: float):
    s3 = clients("s3")
    data = small_model_bytes()
    s3.put_object(Bucket="models", Key=f"runs/{name}/{accuracy}/model.skops", Body=data)
    return registry.register_version(
        s3,
        "models",
        name,
        model_uri=f"s3://models/runs/{name}/{accuracy}/model.skops",
        sha256=hashlib.sha256(data).hexdigest(),
        metrics={"accuracy": accuracy, "f1_macro": accuracy - 0.01},
        primary_metric="accuracy",
        signature={
            "inputs": [{"name": "petal <width>", "type": "float"}],
            "target": {"name": "species", "type": "string"},
            "classes": ["setosa", "versicolor", "virginica"],
        },
        lineage={
            "dataset": {"name": "flowers", "version": "0123456789abcdef", "sha256": "ab" * 32, "rows": 150},
            "run_id": "run-1",
            "compute": {
                "backend": "ec2",
                "instance_type": "c7i.large",
                "instances": 1,
                "reasons": ["cheapest"],
            },
            "versions": {"scikit-learn": "1.9.1"},
            "code_version": "0.1.0+gabc",
            "duration_s": 12.0,
            "cost_usd_estimate": 0.0012,
            "cost_usd_observed": 0.0004,
        },
        actor="test",
        evaluation=evaluation,
    )


def test_the_card_holds_every_section_and_its_plots(models) -> None:
    register(models, "flowers", None, 0.8)  # an old version: no evaluation data
    register(models, "flowers", classification_evaluation(), 0.9)
    registry.set_alias(models("s3"), "models", "flowers", registry.CHAMPION, 1, actor="test", reason="first")
    manifest = {"name": "flowers", "version": "0123456789abcdef", "rows": 150, "columns": []}
    put_json(models("s3"), "data", "datasets/flowers/0123456789abcdef/manifest.json", manifest)

    card = build_card(models("s3"), "models", models, "data", "flowers:2")
    assert card["champion"] == {"version": 1, "metrics": {"accuracy": 0.8, "f1_macro": 0.79}}
    assert card["evaluation"] == classification_evaluation()
    assert [entry["version"] for entry in card["history"]] == [1, 2]
    assert card["events"][0]["action"] == "registered"
    parser = parse_card(render_card(card))
    assert parser.sections == list(CARD_SECTIONS) and parser.external == []
    images = card_images(parser)
    assert list(images) == [*CLASSIFICATION_PLOTS, "accuracy by version"]
    assert all(image.width > 300 for image in images.values())
    html = render_card(card)
    assert "petal &lt;width&gt;" in html and "petal <width>" not in html  # escaped everywhere
    assert "champion v1" in html and "c7i.large" in html and "scikit-learn" in html


def test_an_old_version_gets_a_card_without_plots_and_a_note(models) -> None:
    register(models, "old", None, 0.8)
    card = build_card(models("s3"), "models", models, "data", "old")
    assert card["evaluation"] is None and "trained before" in card["evaluation_note"]
    assert "not available" in card["dataset"]["note"]  # its dataset is gone: the card is still written
    parser = parse_card(render_card(card))
    assert parser.sections == list(CARD_SECTIONS) and parser.images == []


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("nosuch", "no model named 'nosuch'"),
        ("flowers:7", "has no version 7"),
        ("flowers@staging", "has no alias 'staging'"),
        ("Bad Name!", "invalid model name"),
        ("flowers:zero", "must be a positive whole number"),
    ],
)
def test_bad_references_are_registry_errors(models, reference, message) -> None:
    register(models, "flowers", None, 0.8)
    with pytest.raises(registry.RegistryError, match=message):
        build_card(models("s3"), "models", models, "data", reference)
