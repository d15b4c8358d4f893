"""Stage 1 — the idea: a markdown file a researcher writes, checked before any work starts.

An idea file looks like::

    ---
    name: lateral_inhibition        # optional: workspace name (default: the file's stem)
    template: sae_variants          # optional (default: sae_variants)
    max_runs: 5                     # optional; also max_attempts, profile
    extra:                          # optional: free-form settings, kept in Idea.extra
      note: anything
    ---
    # Percentile-Adaptive Lateral Inhibition

    Optional free text: the motivation.

    ## Experiment
    1. Compute ...
    2. ...

    ## Implementation plan
    1. In CustomSAE ...

The front matter is YAML. A malformed idea raises `IdeaError`, whose message names the file, the problem and the fix.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from agent.resources import templates_dir

TEMPLATES_DIR = templates_dir()  # in the installed package, else the checkout's templates/
DEFAULT_TEMPLATE = "sae_variants"

# Section headings we accept for each part (lower-cased, compared after stripping).
EXPERIMENT_HEADINGS = ("experiment", "experiments", "the experiment", "proposed experiment")
PLAN_HEADINGS = ("implementation plan", "implementation", "plan")
FRONT_MATTER_KEYS = {"name", "template", "max_runs", "max_attempts", "profile", "extra"}
EXAMPLES = {"name": "lateral_inhibition", "template": "sae_variants", "profile": "cpu"}


class IdeaError(Exception):
    """A malformed idea file: the message says which file, what is wrong, and how to fix it."""


@dataclass
class Idea:
    path: Path
    name: str
    title: str
    experiment: str
    plan: str = ""
    motivation: str = ""
    template: str = DEFAULT_TEMPLATE
    max_runs: int | None = None
    max_attempts: int | None = None
    profile: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def template_dir(self) -> Path:
        return resolve_template(self.path, self.template)

    def to_json(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    def replay_file(self) -> Path:
        """The recorded reference replies shipped beside the idea (offline replay)."""
        return self.path.with_name(self.path.stem + ".replay.json")


def resolve_template(idea_path: Path, template: str) -> Path:
    """A template is a name under templates/, or a folder path relative to the idea file."""
    if "/" in template or template.startswith("."):
        return (idea_path.parent / template).resolve()
    return TEMPLATES_DIR / template


def _fail(path: Path, problem: str, fix: str) -> IdeaError:
    return IdeaError(f"{path}: {problem}\n  fix: {fix}")


def _split_front_matter(path: Path, text: str) -> tuple[dict, str]:
    if not text.startswith("---"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0:
        raise _fail(path, "front matter starts with '---' but never ends",
                    "close it with a line holding only '---'")
    return _parse_front_matter(path, text[3:end]), text[end + 4:]


def _parse_front_matter(path: Path, block: str) -> dict:
    """The YAML between the '---' lines, checked key by key; line numbers are the file's own
    (the block starts on the line of the opening '---')."""
    try:
        node = yaml.compose(block, Loader=yaml.SafeLoader)
        meta = yaml.safe_load(block)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise _fail(path, f"{where}front matter is not valid YAML ({problem})",
                    "write one 'key: value' per line; quote values holding ': ' or '#'") from None
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise _fail(path, f"line {node.start_mark.line + 1}: front matter is not a set of 'key: value' lines "
                    f"(it is a YAML {type(meta).__name__})", "write one 'key: value' per line")
    lines, first_line, out = block.splitlines(), {}, {}
    for key_node, _ in node.value:
        lineno = key_node.start_mark.line + 1
        if key_node.value in first_line:
            raise _fail(path, f"line {lineno}: {key_node.value!r} is set twice (first on line "
                        f"{first_line[key_node.value]})", "keep one of the two lines")
        first_line[key_node.value] = lineno
    for key, value in meta.items():
        lineno = first_line.get(str(key), node.start_mark.line + 1)
        name = str(key).lower()
        if name not in FRONT_MATTER_KEYS:
            hint = difflib.get_close_matches(name, sorted(FRONT_MATTER_KEYS), n=1)
            raise _fail(path, f"line {lineno}: {lines[lineno - 1].strip()!r} is not a front-matter setting",
                        (f"did you mean '{hint[0]}'? " if hint else "")
                        + f"write 'key: value' with a key among {', '.join(sorted(FRONT_MATTER_KEYS))}")
        if value is not None:  # `profile:` left empty, or `~`: the default
            out[name] = _check_value(path, lineno, name, value)
    return out


def _check_value(path: Path, lineno: int, key: str, value):
    """A front-matter value of the type its key needs, or an IdeaError naming the line."""
    if key == "extra":
        if not isinstance(value, dict):
            raise _fail(path, f"line {lineno}: 'extra' must be a mapping (got {value!r})",
                        "indent 'key: value' lines under 'extra:'")
        return value
    if key in ("max_runs", "max_attempts"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _fail(path, f"line {lineno}: front matter '{key}: {value}' is not a positive whole number",
                        f"write e.g. '{key}: 5'")
        return value
    if key == "name" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # `name: 2024` names the workspace as it reads
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"line {lineno}: front matter '{key}' must be a word or a path (got {value!r})",
                    f"write e.g. '{key}: {EXAMPLES[key]}'")
    return value.strip()


def _sections(body: str) -> tuple[str | None, str, dict[str, str]]:
    """Split markdown into (title, text before the first ## section, {heading: text})."""
    title, preamble, sections = None, [], {}
    current = None
    for line in body.splitlines():
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if heading and len(heading.group(1)) == 1 and title is None:
            title = heading.group(2).strip()
        elif heading and len(heading.group(1)) >= 2:
            current = heading.group(2).strip().lower().rstrip(":")
            sections[current] = ""
        elif current is None:
            preamble.append(line)
        else:
            sections[current] += line + "\n"
    return title, "\n".join(preamble).strip(), {k: v.strip() for k, v in sections.items()}


def _pick(sections: dict[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        if sections.get(name):
            return sections[name]
    return ""


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:60] or "idea"


def load_idea(path: str | Path) -> Idea:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(path, "no such file", "check the path; ideas live in ideas/*.md") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot be read ({exc})", "give a UTF-8 markdown file") from None

    meta, body = _split_front_matter(path, text)
    title, preamble, sections = _sections(body)
    if not title:
        raise _fail(path, "has no title", "start the file with a line '# <title of the idea>'")
    experiment = _pick(sections, EXPERIMENT_HEADINGS)
    if not experiment:
        raise _fail(path, "has no experiment section",
                    "add a section '## Experiment' with the numbered steps of the experiment")

    max_runs, max_attempts = meta.get("max_runs"), meta.get("max_attempts")
    template = meta.get("template", DEFAULT_TEMPLATE)
    if not (resolve_template(path, template) / "template.json").is_file():
        known = sorted(p.parent.name for p in TEMPLATES_DIR.glob("*/template.json"))
        raise _fail(path, f"names an unknown template {template!r}",
                    f"use one of: {', '.join(known) or '(none installed)'}, or a folder path "
                    "holding a template.json")

    name = slugify(meta.get("name") or path.stem)
    return Idea(
        path=path, name=name, title=title, experiment=experiment,
        plan=_pick(sections, PLAN_HEADINGS), motivation=preamble, template=template,
        max_runs=max_runs, max_attempts=max_attempts,
        profile=meta.get("profile"), extra=meta.get("extra", {}),
    )


# --- AI-Scientist idea lists -------------------------------------------------------------

def _as_text(value) -> str:
    if isinstance(value, list):
        return "\n".join(f"{i}. {item}" for i, item in enumerate(value, start=1))
    return str(value or "").strip()


def _numbered(text: str) -> str:
    """AI-Scientist writes steps inline ('1. a 2. b'); put each on its own line."""
    return re.sub(r"\s+(?=\d+\.\s)", "\n", text).strip()


def idea_markdown(entry: dict) -> str:
    """Render one AI-Scientist idea (Name, Title, Experiment, Technical_Details, ...) as markdown."""
    name = slugify(str(entry.get("Name") or entry.get("Title") or "idea"))
    title = str(entry.get("Title") or entry.get("Name") or name).strip()
    parts = [f"---\nname: {name}\n---\n", f"# {title}\n"]
    if entry.get("Technical_Details"):
        parts.append(_as_text(entry["Technical_Details"]) + "\n")
    parts.append("## Experiment\n\n" + (_numbered(_as_text(entry.get("Experiment")))
                                         or "1. (not given in the idea list)") + "\n")
    if entry.get("Implementation_Plan"):
        parts.append("## Implementation plan\n\n" + _numbered(_as_text(entry["Implementation_Plan"])) + "\n")
    known = {"Name", "Title", "Experiment", "Technical_Details", "Implementation_Plan"}
    rest = {k: v for k, v in entry.items() if k not in known}
    if rest:
        lines = "\n".join(f"- {k}: {v}" for k, v in rest.items())
        parts.append("## Notes from the idea list\n\n" + lines + "\n")
    return "\n".join(parts)


def import_ideas(json_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Convert an AI-Scientist ideas.json into idea files; never overwrites an existing one."""
    json_path, out_dir = Path(json_path), Path(out_dir)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(json_path, "no such file", "give the path of an AI-Scientist ideas.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(json_path, f"is not valid JSON ({exc})", "give an AI-Scientist ideas.json") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise _fail(json_path, "is not a list of ideas", "expect a JSON list of objects with Name, Title, ...")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in data:
        text = idea_markdown(entry)
        name = slugify(str(entry.get("Name") or entry.get("Title") or "idea"))
        target = out_dir / f"{name}.md"
        n = 2
        while target.exists():
            target = out_dir / f"{name}_{n}.md"
            n += 1
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
