"""Reading a workspace's history back: `log`, `show`, `replay`, `report`.

Everything comes from git (commit trailers, and files as they were at each commit), never from a
side database, so these commands work on any clone of a workspace. None of them writes into the
workspace: replays go to `<workspace>.replays/` and reports to `<workspace>.report.html` beside it.

The commands are keyword functions (`log`, `show`, `replay`, `report`) over typed parameters:
the CLI (agent/cli.py) turns its parsed arguments into them, Python callers and tests call them.

One module per command (`log_cmd`, `show_cmd`, `replay_cmd`, `report_cmd`; what they share in
`rows`, the report's page in `report.html`); every name is re-exported here, so `review.replay`
is the function. (The modules are not named `log.py` etc. because the package attribute of that
name is the command's function, which would hide the module from `monkeypatch` and `import as`.)

Exit status: 0 done (a replay that reproduced), 1 a replay that did not reproduce, 2 bad input
(raised as HistoryError, which the CLI prints).
"""

from agent.review.log_cmd import UNBOUNDED, log, log_table
from agent.review.replay_cmd import (DEFAULT_TOLERANCE, L0_RELATIVE_TOLERANCE, ReplayVerdict, _judge_failure,
                                     _judge_success, extract_commit, recorded_signature, replay)
from agent.review.report_cmd import (PLOT_TIMEOUT, collect_plots, default_report_path, final_split_lines,
                                     report, report_html, report_markdown)
from agent.review.rows import (DIFF_EXCLUDES, EXTRA_METRICS, METRICS, STATUS_CSS, STATUS_STYLE, Row,
                               collect_rows, final_info_at, headline_of, metric_cell, summary_line)
from agent.review.show_cmd import (SHOW_BLOCK_CHARS, SHOW_LINE_CHARS, AttemptDetail, attempt_detail, bound_text,
                                   metrics_table, new_assistant_messages, show)

__all__ = [
    "DEFAULT_TOLERANCE", "DIFF_EXCLUDES", "EXTRA_METRICS", "L0_RELATIVE_TOLERANCE", "METRICS", "PLOT_TIMEOUT",
    "SHOW_BLOCK_CHARS", "SHOW_LINE_CHARS", "STATUS_CSS", "STATUS_STYLE", "UNBOUNDED",
    "AttemptDetail", "ReplayVerdict", "Row",
    "attempt_detail", "bound_text", "collect_plots", "collect_rows", "default_report_path", "extract_commit",
    "final_info_at", "final_split_lines", "headline_of", "log", "log_table", "metric_cell",
    "metrics_table", "new_assistant_messages", "recorded_signature", "replay", "report",
    "report_html", "report_markdown", "show", "summary_line",
    "_judge_failure", "_judge_success",
]
