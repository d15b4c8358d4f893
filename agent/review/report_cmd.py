"""`report`: one self-contained page (HTML from `report.html`, or markdown) beside the workspace:
the idea, every attempt, the plots, the notes, the cost."""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from pathlib import Path
from string import Template

from rich.console import Console
from rich.text import Text

from agent import history
from agent.review.replay_cmd import extract_commit
from agent.review.rows import (STATUS_CSS, Row, _cost, _duration, _first_line, _total_cost, _total_tokens,
                               collect_rows, metric_cell, metrics_caption, shown_metrics, summary_line)

PLOT_TIMEOUT = 300
PAGE_TEMPLATE = "report.html"  # the HTML skeleton and its CSS, a package data file


def default_report_path(workspace: Path) -> Path:
    return workspace.parent / f"{workspace.name}.report.html"


def report(workspace: Path, *, console: Console, out: Path | None = None,
           run_plot: bool = True) -> int:
    """Write a self-contained report (HTML, or markdown if `out` ends in .md) beside the workspace."""
    workspace = Path(workspace)
    repo = history.open_workspace(workspace)
    rows, baseline = collect_rows(workspace)
    head = repo.head.commit.hexsha
    idea = history.file_at(repo, head, "idea.md") or "(no idea.md in this workspace)"
    notes = history.file_at(repo, head, "notes.txt")
    final = final_split_lines(history.file_at(repo, head, "final_split.json"))
    if final:   # shown with the notes: both are written once, at the end of the idea
        notes = (notes or "").rstrip() + "\n\n" + "\n".join(final)
    plots, plot_note = collect_plots(repo, head, run_plot=run_plot)
    out = Path(out) if out else default_report_path(workspace)
    as_markdown = out.suffix.lower() in (".md", ".markdown")
    render = report_markdown if as_markdown else report_html
    text = render(workspace, rows, baseline, idea, notes, plots, plot_note)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(Text(f"wrote {out} ({len(rows)} attempts, {len(plots)} plot(s)"
                       + (f"; {plot_note}" if plot_note else "") + ")"), soft_wrap=True)
    return 0


def final_split_lines(text: str | None) -> list[str]:
    """The final split's scores (never shown to the coder), one line per run."""
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return []
    if not isinstance(record, dict) or not record.get("runs"):
        return []
    from agent import results
    metric = (record.get("headline_metrics") or results.DEFAULT_HEADLINE_METRICS)[0]
    lines = [f"Final split (scored once at the end, never shown to the coder; baseline: "
             f"{record.get('baseline_seeds', 1)} seed(s)):"]
    for run, saes in record["runs"].items():
        for key, metrics in saes.items():
            value = metrics.get(metric) or {}
            vs = (metrics.get("vs_baseline") or {}).get(metric) or {}
            if not value or not vs:
                continue
            best = " (best on the test split)" if str(record.get("best_on_test")) == str(run) else ""
            lines.append(f"- run {run}{best}: {results.SHORT.get(metric, metric)} {value['value']:.3f} "
                         f"({vs['change']:+.3f} ± {vs['half_width']:.3f}, {vs['verdict']})")
    return lines if len(lines) > 1 else []


def collect_plots(repo, sha: str, *, run_plot: bool = True) -> tuple[list[tuple[str, bytes]], str]:
    """PNGs committed at `sha`; if there are none, those plot.py makes in a scratch copy."""
    tree = repo.commit(sha).tree
    committed = [(b.path, b.data_stream.read()) for b in tree.traverse()
                 if b.type == "blob" and b.mode != history.LINK_MODE and b.path.lower().endswith(".png")]
    if committed:
        return sorted(committed), ""
    if not any(b.path == "plot.py" for b in tree.traverse() if b.type == "blob"):
        return [], "no plots: no PNG committed and no plot.py"
    if not run_plot:
        return [], "no PNG committed (plot.py not run)"
    import tempfile
    from agent import runner, sandbox
    from agent.process import RunStatus
    with tempfile.TemporaryDirectory(prefix="sae-agent-report-") as tmp:
        root = Path(tmp) / "tree"
        extract_commit(repo, sha, root)
        box = sandbox.Box(sandbox.choose(), root, writable=[root])   # plot.py is the LLM's code too
        result = runner.run_experiment(root, ".plot", command=["{python}", "plot.py"],
                                       timeout=PLOT_TIMEOUT, wrap=box.wrap)
        made = sorted((p.relative_to(root).as_posix(), p.read_bytes()) for p in root.rglob("*.png"))
        if result.status != RunStatus.OK:
            return made, f"plot.py failed: {result.error or result.status}"
        return made, "" if made else "plot.py ran but made no PNG"


def _idea_title(idea: str) -> str:
    for line in idea.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return "SAE experiment"


def report_markdown(workspace, rows, baseline, idea, notes, plots, plot_note) -> str:
    lines = [f"# Report: {_idea_title(idea)}", "", f"Workspace `{workspace}` · {summary_line(rows)}",
             "", "## Idea", "", idea.strip(), "", "## Runs", ""]
    metrics = shown_metrics(rows)
    header = ["run", "attempt", "status"] + [name for _, name in metrics] + \
             ["time", "cost", "commit", "error"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in _report_cells(r, metrics)) + " |")
    if metrics_caption(baseline):
        lines += ["", f"_{metrics_caption(baseline)}_"]
    lines += ["", "## Plots", ""]
    for name, data in plots:
        lines += [f"### {name}", "", f"![{name}](data:image/png;base64,{base64.b64encode(data).decode()})", ""]
    if plot_note:
        lines += [f"_{plot_note}_", ""]
    lines += ["## Notes", "", (notes or "(no notes.txt)").strip(), "", "## Cost", "", _cost_text(rows), ""]
    return "\n".join(lines)


def _report_cells(r: Row, shown: list[tuple[str, str]]) -> list[str]:
    a = r.attempt
    saes = sorted(r.metrics) or [""]
    metrics = ["<br>".join(metric_cell(r, sae, key) for sae in saes) for key, _ in shown]
    return [str(a.run), str(a.attempt), a.status] + metrics + \
        [_duration(a.duration), _cost(a.cost), a.short_sha, _first_line(a.error)]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cost_text(rows: list[Row]) -> str:
    models = sorted({r.attempt.model for r in rows if r.attempt.model not in (None, "template")})
    return (f"${_total_cost(rows):.4f} over {sum(1 for r in rows if r.attempt.cost is not None)} "
            f"LLM replies, {_total_tokens(rows)} tokens; model(s): {', '.join(models) or 'unknown'}")


def report_html(workspace, rows, baseline, idea, notes, plots, plot_note) -> str:
    """The page: `report.html` (the skeleton and its CSS) filled with escaped text and the runs' table."""
    esc = html.escape
    metrics = shown_metrics(rows)
    header = ["run", "attempt", "status"] + [name for _, name in metrics] + \
             ["time", "cost", "commit", "error"]
    table = ["<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for r in rows:
        cells = [esc(c).replace("&lt;br&gt;", "<br>") for c in _report_cells(r, metrics)]
        cells[2] = f'<span class="{esc(r.attempt.status)}">{cells[2]}</span>'
        table.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table.append("</tbody></table>")
    if metrics_caption(baseline):
        table.append(f"<p><small>{esc(metrics_caption(baseline))}</small></p>")
    figures = [f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
               f'{base64.b64encode(data).decode()}"><figcaption>{esc(name)}</figcaption></figure>'
               for name, data in plots]
    if plot_note:
        figures.append(f"<p><em>{esc(plot_note)}</em></p>")
    # Template, not str.format: the CSS is full of braces. Values are inserted once, never re-read.
    return Template(_page_template()).substitute(
        title=esc(_idea_title(idea)), workspace=esc(str(workspace)), summary=esc(summary_line(rows)),
        idea=esc(idea.strip()), runs="\n".join(table), plots="\n".join(figures or ["<p>(no plots)</p>"]),
        notes=esc((notes or "(no notes.txt)").strip()), cost=esc(_cost_text(rows)),
        status_css="".join(f".{status}{{color:{colour}}}" for status, colour in STATUS_CSS.items()))


def _page_template() -> str:
    """report.html, shipped beside this module (package data in the wheel)."""
    return resources.files("agent.review").joinpath(PAGE_TEMPLATE).read_text(encoding="utf-8")
