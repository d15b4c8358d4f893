"""`log`: one line per attempt, its metrics against the baseline, the totals."""

from __future__ import annotations

import json
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent.review.rows import (STATUS_STYLE, Row, _cost, _duration, _first_line, _short_sae,
                               _total_cost, _total_tokens, collect_rows, metric_cell, metrics_caption,
                               shown_metrics, summary_line)
from agent.ui import print_unclipped

UNBOUNDED = 1_000_000  # the width `log` lays its table out for when the output is not a terminal


def log(workspace: Path, *, as_json: bool = False, console: Console) -> int:
    rows, baseline = collect_rows(workspace)
    if as_json:
        data = {"workspace": str(workspace),
                "baseline": baseline.attempt.label if baseline else None,
                "total_cost_usd": _total_cost(rows), "total_tokens": _total_tokens(rows),
                "attempts": [r.to_json() for r in rows]}
        console.file.write(json.dumps(data, indent=2) + "\n")
        return 0
    # Off a terminal (a pipe, a file) nothing is cropped: the error column takes what it needs.
    width = console.width if console.is_terminal else UNBOUNDED
    table, errors = log_table(rows, baseline, width=width)
    console.print(Text(str(workspace), style="bold"), soft_wrap=True)
    print_unclipped(console, table)
    for line in errors:
        console.print(Text(line, style="red"), overflow="ellipsis", no_wrap=True)
    console.print(Text(summary_line(rows)))
    return 0


def log_table(rows: list[Row], baseline: Row | None, title: str = "",
              width: int = 160) -> tuple[Table, list[str]]:
    """One row per attempt; every column keeps its content's width and the error gets what is
    left. On a terminal too narrow for a useful error column, the errors come back as lines to
    print under the table instead."""
    many_saes = len({sae for r in rows for sae in r.metrics}) > 1
    metrics = shown_metrics(rows)
    # The commit right after the status: on a narrow terminal rich crops the rightmost columns.
    headers = ["run", "att", "status", "commit"] + (["SAE"] if many_saes else []) + \
        [name for _, name in metrics] + ["time", "cost"]
    body = []
    for r in rows:
        a = r.attempt
        saes = sorted(r.metrics) or [""]
        cells = [str(a.run), str(a.attempt), a.status, a.short_sha]
        if many_saes:
            cells.append("\n".join(_short_sae(s) for s in saes))  # cells become Text: no markup
        cells += ["\n".join(metric_cell(r, sae, key) for sae in saes) for key, _ in metrics]
        cells += [_duration(a.duration), _cost(a.cost)]
        body.append((cells, _first_line(a.error)))
    widths = [max([len(h)] + [len(ln) for cells, _ in body for ln in cells[i].splitlines()])
              for i, h in enumerate(headers)]
    caption = metrics_caption(baseline)
    table = Table(title=title or None, title_justify="left", caption=caption, caption_justify="left",
                  box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for i, (h, w) in enumerate(zip(headers, widths)):
        right = i < 2 or h in [name for _, name in metrics] + ["time", "cost"]
        table.add_column(h, justify="right" if right else "left", no_wrap=True, min_width=w)
    left = width - sum(widths) - 2 * len(headers) - 1
    inline = left >= 24
    if inline:
        table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=left)
    for r, (cells, error) in zip(rows, body):
        texts = [Text(c, style=STATUS_STYLE.get(a.status, "") if i == 2 else "") for i, c in enumerate(cells)]
        table.add_row(*texts, *([Text(error)] if inline else []))
    below = [] if inline else [f"{r.attempt.label}: {error}" for r, (_, error) in zip(rows, body)
                               if error]
    return table, below
