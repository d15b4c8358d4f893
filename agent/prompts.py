"""Every text the loop sends to the LLM coder, as data. Filled with str.format().

Where a text says how to edit, it reads `{edit_with}`, `{match_hint}`, `{notes_with}` or `{format_hint}`:
`edit_words(edit_format)` gives their values for --edit-format (str.format ignores the ones a text
does not use, so every text is filled with all of them).
"""

SYSTEM = """\
You are an expert machine-learning research engineer working on sparse autoencoders (SAEs) \
for language-model interpretability. You implement a research idea by editing code, one \
experiment run at a time, and you read the results of each run before planning the next.

{edit_rules}- You may edit only these files: {editable}. The harness ({protected}) is read-only.
- Never add command-line arguments: every run is exactly `{command}`.
"""

# SYSTEM's {edit_rules}, by --edit-format ("auto" asks for diffs and takes whole files too).
DIFF_RULES = """\
You edit files ONLY with SEARCH/REPLACE blocks, exactly in this format:

experiment.py
```python
<<<<<<< SEARCH
    (lines copied exactly from the current file, enough to be unique)
=======
    (the new lines that replace them)
>>>>>>> REPLACE
```

Rules for edits:
- The SEARCH part must match the current file exactly, character for character. Copy it; \
never abbreviate it with "..." or comments such as "# existing code".
- The REPLACE part must be complete, working code. Never write placeholders such as \
"# Existing init code..." or "# ... rest of the code ...": they delete the real code.
- Keep blocks small: change only what needs changing. Use several blocks rather than one huge one.
"""

WHOLE_RULES = """\
You edit a file by sending it WHOLE: its name alone on a line, then the complete new file in a \
fenced block, exactly in this format:

experiment.py
```python
(every line of the new file, from the first to the last)
```

Rules for edits:
- Send the complete file, every line of it, including the lines you do not change. Never \
abbreviate with "..." or comments such as "# existing code" or "# ... rest of the code ...": \
whatever is not in the block is deleted.
- Send only the files you change, each once. Put nothing but the file's name on the line before \
its opening fence.
"""

TASK = """\
Your goal is to implement the following idea: {title}.

{motivation}

The proposed experiment is as follows:
{experiment}

The implementation plan is as follows:
{plan}

You are given up to {max_runs} runs to complete the necessary experiments. You do not need to \
use them all. Run 0, the baseline (the unmodified code below), is already done.

First, plan the list of experiments you would like to run (for example, if you sweep a \
hyperparameter, list each value per run). Then make the edits for run 1.

Baseline results (run 0):
{baseline}

{headline_note}How to read results: every change against the baseline comes with a 95% interval that holds \
the test set's noise and the baseline's seed spread. A change is a finding only when its \
interval excludes zero ("better" or "worse"); otherwise it is "no detectable change", however \
large the number looks. Sparsity moves every other metric: compare SAEs at a similar L0, and \
say so when they are not. The harness measures everything itself on data your code never sees: \
experiment.py trains the SAE and saves it with `harness.save_sae`, nothing more.

After each change we run `{command}` with i = the run number and report the results (or the \
error) back to you. When you have finished all the experiments you planned, reply with \
ALL_COMPLETED and no edits.

The current files:

{files}
"""

# TASK's {headline_note}: what the profile's headline metrics mean, chosen by its primary metric
# (results.headline_metrics()[0]); none for the language models' sparse probing, the default.
SYNTHETIC_METRICS = """\
What the metrics mean here: the SAE is trained on a synthetic world{world} whose ground-truth \
features are known (built with SAELens' SynthSAEBench generator), and it is scored against them. \
f1, the headline: each latent as a detector of its best-matching true feature (F1 on held-out \
samples, averaged over latents). mcc: how well the decoder rows align with the true feature \
directions after a one-to-one matching (mean |cosine|). uniqueness: the fraction of latents whose \
matched feature no other latent claims. explained_variance: how much of the input the \
reconstruction keeps. Higher is better for all of them; L0 is the sparsity you set, not a score, \
so compare SAEs at matched L0.

"""
HEADLINE_NOTES = {"f1": SYNTHETIC_METRICS}

FILE_DUMP = """\
{name}
```{lang}
{content}
```
"""

RUN_SUCCEEDED = """\
Run {run} completed. Results against run 0 (the baseline):

{comparison}

Decide whether you need to re-plan your experiments given these results. Then implement the \
next run on your list ({next_command}), or reply ALL_COMPLETED if you are done. \
{runs_left} run(s) remain."""

RUN_FAILED = """\
Run {run} failed (attempt {attempt} of {max_attempts}). The command `{command}` said:

{feedback}

Fix the code with {edit_with} so that run {run} succeeds. {match_hint}

{files}"""

RESULTS_INVALID = """\
Run {run} exited normally but its results are not usable: {problem}

Fix the code so that run {run} trains the SAE and ends with `harness.save_sae(...)`: the harness \
evaluates the saved SAE in its own process and writes `final_info.json` itself."""

EVALUATION_FAILED = """\
Run {run} trained, but the harness could not evaluate the SAE it saved (attempt {attempt} of \
{max_attempts}). The harness's evaluator said:

{feedback}

The evaluator loads the `encode`/`decode` that `harness.save_sae` exported with torch.export \
and runs them on batches of held-out activations. Fix the code with {edit_with} so that \
they work on any batch of shape [batch, d_in] (and [batch, d_sae] for decode). {match_hint}

{files}"""

UNTRAINED = """\
Run {run} ran, but the harness's measurements say its SAE is not trained, so it does not count:

{problems}

Fix the training (steps, learning rate, loss) so that the SAE learns to reconstruct its input."""

GATE_FAILED = """\
Your edits were NOT run and NOT kept, because a check found problems that would break the \
code:

{findings}

The files are back to how they were before your reply. Make the edits again without these \
problems, with {edit_with} against the current file:

{files}"""

EDITS_FAILED = """\
{feedback}"""

ALREADY_FAILED = """\
With your edits, {file} became exactly a version that already failed in an earlier attempt, so \
it was not run again and your edits were undone. Fix the error reported before instead. The \
current files:

{files}"""

RESTORED = """\
The same error ({signature}) happened twice in a row, so {file} was restored to the last \
version that ran successfully (run {restored_run}). Start again from that code (shown below) \
and implement run {run} differently.

{files}"""

NO_EDITS = """\
Your reply changed nothing in experiment.py and did not say ALL_COMPLETED, so there is nothing \
to run. Either make the edits for run {run} in {format_hint}, or reply ALL_COMPLETED if the \
experiments are done."""

# Before any run has worked, "done" is not an option the coder is offered: small models take it
# at once (Qwen2.5-Coder 0.5B and 1.5B both answered the first task with ALL_COMPLETED alone).
NO_EDITS_BEFORE_ANY_RUN = """\
Your reply changed nothing in experiment.py, so there is nothing to run. Make the edits for \
run {run} in {format_hint}: experiment.py changed to implement the idea."""

DONE_BEFORE_ANY_RUN = """\
No code of yours has run in this idea yet, so ALL_COMPLETED is not accepted: the idea has not \
been tried. Make the edits for run {run} in {format_hint}: experiment.py changed to implement the idea."""

# After NO_EDITS under --edit-format diff, when the reply held files whole.
WHOLE_NOT_APPLIED = """\
Your reply gave {files} whole; this session applies only SEARCH/REPLACE blocks (--edit-format \
diff), so nothing of it was applied."""

# --edit-format auto: once, after the first reply that held no usable edit.
FORMAT_REMINDER = """\
The two ways to edit a file that are applied here:

1. SEARCH/REPLACE blocks, best for small changes:

experiment.py
```python
<<<<<<< SEARCH
    (lines copied exactly from the current file)
=======
    (the new lines that replace them)
>>>>>>> REPLACE
```

2. The whole file, every line of it (whatever is not in the block is deleted):

experiment.py
```python
(the complete new file)
```

Either way the file's name stands alone on the line just before the opening fence; code shown \
any other way is not applied."""

# --edit-format auto: from the second reply whose SEARCH/REPLACE blocks could not be parsed.
WHOLE_INSTEAD = """\
Your SEARCH/REPLACE blocks could not be parsed in {count} replies. Send the file whole instead: \
its name alone on a line, then the complete new file, every line of it, in a fenced block."""

# The provider stopped the reply at its output limit (finish_reason "length").
REPLY_CUT_OFF = """\
Your reply was cut off: it reached the model's output limit before it ended, so none of it was \
applied (a cut edit would break the file). Send a shorter reply: {shorter}"""
SHORTER = {
    "diff": "fewer, smaller SEARCH/REPLACE blocks and less prose.",
    "whole": "only the files you change and less prose; if a file is too long to send whole, "
             "change it with SEARCH/REPLACE blocks instead.",
    "auto": "less prose, and SEARCH/REPLACE blocks rather than whole files.",
}

WRITE_NOTES = """\
The experiments are over ({reason}). Update notes.txt with {notes_with}: for each \
run, what it changed and what it showed, with the key numbers against run 0, and a short \
conclusion about the idea. Reply with ALL_COMPLETED after it."""

RESUMED = """\
The session was interrupted and has now been resumed. Whatever was running when it stopped did \
not finish, so its results are lost. The files as they stand now are below. Continue with run \
{run}: make (or re-make) its edits.

{files}"""

PROTECTED_MODIFIED = """\
The run changed things outside its output folder: {files}. They were put back, and this run \
does not count. A run may write only in its output folder (`--out_dir`): the harness, the \
workspace's settings, its other files and its git history must stay as they are. Change only \
the editable files, with {edit_with}."""

EDITS_FAILED_AND_GATE = """\
{feedback}
The blocks that did apply were checked too, and a check found problems that would break the \
code:

{findings}

So none of your edits were kept: the files are back to how they were before your reply. Send \
all the edits again, fixed, as {edit_with} against the current files:

{files}"""

GATE_NOTES = """\
The check of the blocks that did apply found these (not blocking):

{findings}"""

ERROR_FOR_REFERENCE = """\
{restored}

The error, for reference:

{error}"""

# The context budget (agent/budget.py) left older turns out of this request; appended to the latest
# user turn, never to the task, so the prefix a server caches stays the same.
TURNS_LEFT_OUT = """\
({count} earlier messages of this conversation, between the task and the latest turns, are left \
out to fit the model's context window.)"""

# --- how to edit, by --edit-format (edit_words) -----------------------------------------------

_DIFF_HINT = ("the SEARCH/REPLACE format (file name on its own line, then a fenced block with "
              "<<<<<<< SEARCH, =======, >>>>>>> REPLACE)")
_WHOLE_HINT = "the whole-file format (file name alone on its own line, then the complete new file in a fenced block)"
EDIT_WORDS = {
    "diff": dict(edit_rules=DIFF_RULES, edit_with="SEARCH/REPLACE blocks", format_hint=_DIFF_HINT,
                 match_hint="Match the SEARCH parts against the current file shown below.",
                 notes_with="a SEARCH/REPLACE block"),
    "whole": dict(edit_rules=WHOLE_RULES, edit_with="whole files", format_hint=_WHOLE_HINT,
                  match_hint="Start from the current file shown below and send it whole.",
                  notes_with="the whole new notes.txt (its name alone on a line, then all of it in a fenced block)"),
}
EDIT_WORDS["auto"] = {**EDIT_WORDS["diff"], "format_hint": f"{_DIFF_HINT} or {_WHOLE_HINT}"}


def edit_words(edit_format: str) -> dict[str, str]:
    """The values of the how-to-edit fields for --edit-format `edit_format`."""
    return EDIT_WORDS[edit_format]


# --- what the LLM is told about a run's output (failures.feedback_text) ------------------------
# aider's "Run failed with the following error" line first: the replies recorded from
# AI-Scientist (aider_import) and the coder's condensing both recognise it.

RUN_OUTPUT_OK = "Run completed (exit code 0) in {seconds}. End of the output:\n"
RUN_OUTPUT_TIMEOUT = "Run timed out after {seconds} and was killed. {error}\nEnd of the output:\n"
RUN_OUTPUT_INTERRUPTED = "Run interrupted by the user after {seconds}."
RUN_OUTPUT_FAILED = "Run failed with the following error: {error}\n"
OUTPUT_BEFORE_ERROR = "Output before the error:\n{context}\n\n"
END_OF_OUTPUT = "End of the output:\n"
OUTPUT_CUT = "[... earlier output cut ...]\n"

# --- one finding of the pre-run gate (checks.format_findings), for people and the LLM --------

FINDING = "{path}:{line}: {warning}{message} — {why}"
FINDING_WARNING = "warning: "
