"""Every text the loop sends to the LLM coder, as data. Filled with str.format()."""

SYSTEM = """\
You are an expert machine-learning research engineer working on sparse autoencoders (SAEs) \
for language-model interpretability. You implement a research idea by editing code, one \
experiment run at a time, and you read the results of each run before planning the next.

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
- You may edit only these files: {editable}. The harness ({protected}) is read-only.
- Never add command-line arguments: every run is exactly `{command}`.
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

Fix the code with SEARCH/REPLACE blocks so that run {run} succeeds. Match the SEARCH parts \
against the current file shown below.

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
and runs them on batches of held-out activations. Fix the code with SEARCH/REPLACE blocks so that \
they work on any batch of shape [batch, d_in] (and [batch, d_sae] for decode). Match the SEARCH \
parts against the current file shown below.

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
problems, with SEARCH/REPLACE blocks against the current file:

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
to run. Either make the edits for run {run} in the SEARCH/REPLACE format (file name on its own line, then a fenced block with \
<<<<<<< SEARCH, =======, >>>>>>> REPLACE), or reply ALL_COMPLETED if the experiments are done."""

WRITE_NOTES = """\
The experiments are over ({reason}). Update notes.txt with a SEARCH/REPLACE block: for each \
run, what it changed and what it showed, with the key numbers against run 0, and a short \
conclusion about the idea. Reply with ALL_COMPLETED after the block."""

RESUMED = """\
The session was interrupted and has now been resumed. Whatever was running when it stopped did \
not finish, so its results are lost. The files as they stand now are below. Continue with run \
{run}: make (or re-make) its edits.

{files}"""

PROTECTED_MODIFIED = """\
The run changed things outside its output folder: {files}. They were put back, and this run \
does not count. A run may write only in its output folder (`--out_dir`): the harness, the \
workspace's settings, its other files and its git history must stay as they are. Change only \
the editable files, with SEARCH/REPLACE blocks."""

EDITS_FAILED_AND_GATE = """\
{feedback}
The blocks that did apply were checked too, and a check found problems that would break the \
code:

{findings}

So none of your edits were kept: the files are back to how they were before your reply. Send \
all the blocks again, fixed, against the current files:

{files}"""

GATE_NOTES = """\
The check of the blocks that did apply found these (not blocking):

{findings}"""

ERROR_FOR_REFERENCE = """\
{restored}

The error, for reference:

{error}"""

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
