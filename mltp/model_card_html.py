"""A model card (`mltp.model_card`) as one self-contained HTML page: inline styles, plots embedded as
`data:` PNGs, no script, no font, nothing fetched, so it opens anywhere, offline, years later."""

from __future__ import annotations

from html import escape
from typing import Any

from mltp.evaluation_plots import data_uri, evaluation_plots, history_plot
from mltp.registry import shown_metric

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; margin: 0;
       background: #f5f6f8; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 32px 48px; }
header { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: baseline; }
h1 { margin: 0; font-size: 28px; }
h2 { margin: 32px 0 8px; font-size: 20px; border-bottom: 1px solid #d6d9e0; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 12px; background: #e3e8f1;
         font-size: 13px; }
.badge.Approved { background: #d5f0dc; } .badge.Rejected { background: #f7d7d7; }
table { border-collapse: collapse; margin: 8px 0; background: #fff; }
th, td { border: 1px solid #d6d9e0; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef0f4; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 13px; word-break: break-all; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
.plots figure { margin: 0; background: #fff; border: 1px solid #d6d9e0; padding: 6px; }
.plots img { display: block; width: 504px; max-width: 100%; }
.note { color: #59606e; }
"""


def render_card(card: dict[str, Any]) -> str:
    sections = [
        _summary(card),
        _metrics(card),
        _evaluation(card),
        _dataset(card["dataset"]),
        _signature(card["signature"]),
        _lineage(card),
        _history(card),
    ]
    title = f"{card['name']} version {card['version']}"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>Model card: {escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )


def _summary(card: dict[str, Any]) -> str:
    aliases = " ".join(f'<span class="badge">@{escape(alias)}</span>' for alias in card["aliases"])
    return (
        f'<header id="summary"><h1>{escape(card["name"])} <span class="note">v{card["version"]}</span></h1>'
        f'<span class="badge {escape(card["approval"])}">{escape(card["approval"])}</span>{aliases}</header>'
        f"<p>A {escape(card['task'])} model of <b>{escape(card['target'] or '-')}</b>, registered "
        f"{escape(card['created_at'])}; {escape(card['primary_metric'])} decides which version is better.</p>"
        f"<p class=note>Model <code>{escape(card['model']['uri'])}</code>, sha256 "
        f"<code>{escape(card['model']['sha256'])}</code></p>"
    )


def _metrics(card: dict[str, Any]) -> str:
    champion = card["champion"]
    held = champion["metrics"] if champion else {}
    if champion is None:
        header = "champion (none yet)"
    elif champion["version"] == card["version"]:
        header = "champion (this version)"
    else:
        header = f"champion v{champion['version']}"
    rows = [
        [
            metric + (" (primary)" if metric == card["primary_metric"] else ""),
            shown_metric(value),
            shown_metric(held.get(metric)),
        ]
        for metric, value in card["metrics"].items()
    ]
    return _section("metrics", "Metrics", _table(["metric", f"v{card['version']}", header], rows))


def _evaluation(card: dict[str, Any]) -> str:
    evaluation = card["evaluation"]
    plots = evaluation_plots(evaluation)
    body = f'<p class="note">{escape(card["evaluation_note"])}</p>' + _figures(plots)
    if evaluation and evaluation.get("per_class"):
        rows = [
            [
                row["class"],
                shown_metric(row["precision"]),
                shown_metric(row["recall"]),
                shown_metric(row["f1"]),
                row["support"],
            ]
            for row in evaluation["per_class"]
        ]
        body += _table(["class", "precision", "recall", "F1", "rows"], rows)
    if evaluation and len(evaluation.get("candidates") or []) > 1:
        metric = evaluation["primary_metric"]
        rows = [
            [number, _params(candidate["params"]), shown_metric(candidate["metrics"].get(metric))]
            for number, candidate in enumerate(evaluation["candidates"], start=1)
        ]
        body += _table(["candidate", "parameters", metric], rows)
    return _section("evaluation", "Evaluation", body)


def _dataset(dataset: dict[str, Any]) -> str:
    facts = [
        ["name", dataset.get("name", "-")],
        ["version", dataset.get("version", "-")],
        ["sha256", dataset.get("sha256", "-")],
        ["rows", f"{dataset['rows']:,}" if isinstance(dataset.get("rows"), int) else "-"],
    ]
    body = _table(["", ""], facts)
    profile = dataset.get("profile")
    if profile:
        columns = [
            [
                c["name"],
                c["type"],
                c["nulls"],
                c["distinct"] if c["distinct"] is not None else "-",
                c["min"],
                c["max"],
            ]
            for c in profile["columns"]
        ]
        body += _table(["column", "type", "nulls", "distinct", "min", "max"], columns)
    else:
        body += f'<p class="note">No profile: {escape(dataset.get("note") or "unknown")}.</p>'
    return _section("dataset", "Dataset", body)


def _signature(signature: dict[str, Any]) -> str:
    rows = [[column["name"], column["type"]] for column in signature.get("inputs", [])]
    body = _table(["input column", "type"], rows)
    target = signature.get("target") or {}
    body += (
        f"<p>Predicts <b>{escape(str(target.get('name', '-')))}</b> ({escape(str(target.get('type', '-')))})"
    )
    if signature.get("classes"):
        body += f"; classes: {escape(', '.join(map(str, signature['classes'])))}"
    return _section("signature", "Signature", body + "</p>")


def _lineage(card: dict[str, Any]) -> str:
    lineage = card["lineage"]
    compute = lineage.get("compute") or {}
    machine = compute.get("backend", "-") + (
        f" ({compute.get('instances')} x {compute['instance_type']})" if compute.get("instance_type") else ""
    )
    facts = [
        ["training run", lineage.get("run_id", "-")],
        ["flow run", lineage.get("flow_run_url") or lineage.get("flow_run_id", "-")],
        ["best job", f"{lineage.get('job_id', '-')} with {_params(lineage.get('params') or {})}"],
        ["compute", machine],
        ["why this compute", "; ".join(compute.get("reasons") or []) or "-"],
        ["duration", f"{lineage['duration_s']:.0f} s" if lineage.get("duration_s") is not None else "-"],
        ["cost (estimated)", _dollars(lineage.get("cost_usd_estimate"))],
        ["cost (trainer time)", _dollars(lineage.get("cost_usd_observed"))],
        ["code", lineage.get("code_version", "-")],
        *[[name, version] for name, version in (lineage.get("versions") or {}).items()],
    ]
    return _section("lineage", "Lineage", _table(["", ""], facts))


def _history(card: dict[str, Any]) -> str:
    champion = card["champion"]["version"] if card["champion"] else None
    plot = history_plot(card["history"], card["primary_metric"], champion)
    events = [
        [event["at"], event["action"], _move(event), event["actor"], event.get("reason") or ""]
        for event in card["events"]
    ]
    body = _figures([plot] if plot else []) + _table(["when", "what", "change", "by", "why"], events)
    return _section("history", "History", body)


def _move(event: dict[str, Any]) -> str:
    alias = f"@{event['alias']} " if event.get("alias") else ""
    return f"{alias}{event.get('from') or '-'} -> {event.get('to') or '-'}"


def _figures(plots: list) -> str:
    return (
        '<div class="plots">'
        + "".join(
            f'<figure><img alt="{escape(plot.title)}" src="{data_uri(plot)}"></figure>' for plot in plots
        )
        + "</div>"
    )


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header) if any(header) else ""
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="number">{escape(str(value))}</td>'
    return f"<td>{escape('' if value is None else str(value))}</td>"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in params.items()) or "defaults"


def _dollars(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"
