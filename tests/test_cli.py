"""The command line as a user meets it: help, version, defaults, and bad numbers refused up front."""

import argparse

import pytest

from agent import __version__, cli, ui


def subcommands(parser: argparse.ArgumentParser):
    """Every (name, parser) below the top level, nested ones (ideas import) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", p) for n, p in subcommands(sub))


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip().endswith(__version__)


def test_every_argument_has_help_and_defaults_are_shown():
    parser = cli.build_parser("sae-agent")
    for name, sub in subcommands(parser):
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{name}: {action.dest} has no help"
    run_help = dict(subcommands(parser))["run"].format_help()
    assert "(default: 3600)" in run_help and "(default: 600)" in run_help
    assert "(default: results)" in run_help
    assert "(default: 0.02)" in dict(subcommands(parser))["replay"].format_help()
    assert "(default: .)" in dict(subcommands(parser))["ideas import"].format_help()
    assert "(default: None)" not in parser.format_help() + run_help


def test_help_names_the_program_the_user_typed():
    assert ui.program_name("/home/me/.venv/bin/sae-agent") == "sae-agent"
    assert ui.program_name("/repo/agent/__main__.py") == "python -m agent"
    assert cli.build_parser("sae-agent").format_usage().startswith("usage: sae-agent")


def test_quiet_and_verbose_on_every_command():
    for name, sub in subcommands(cli.build_parser("sae-agent")):
        if name == "ideas":
            continue
        flags = {s for a in sub._actions for s in a.option_strings}
        assert {"-v", "-q"} <= flags, name


@pytest.mark.parametrize("argv, words", [
    (["--max-runs", "0"], "argument --max-runs: must be above 0, got 0"),
    (["--max-runs", "-3"], "argument --max-runs: must be above 0, got -3"),
    (["--max-attempts", "two"], "argument --max-attempts: 'two' is not a whole number"),
    (["--timeout", "0"], "argument --timeout: must be above 0, got 0"),
    (["--max-cost", "-1"], "argument --max-cost: must be above 0, got -1"),
])
def test_bad_numbers_exit_2_before_any_work(tmp_path, capsys, argv, words):
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as done:
        cli.main(["run", "ideas/lateral_inhibition.md", "--results", str(results), *argv])
    assert done.value.code == 2
    assert words in capsys.readouterr().err
    assert not results.exists()


def test_results_that_is_a_file_is_refused(tmp_path, capsys):
    results = tmp_path / "results.txt"
    results.write_text("not a folder")
    assert cli.main(["run", "ideas/lateral_inhibition.md", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert f"--results {results} is a file, not a folder" in err
    assert results.read_text() == "not a folder"


def test_a_shipped_idea_is_found_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nowhere near the checkout's ideas/
    assert cli.main(["run", "lateral_inhibition", "--profile", "nope"]) == 2
    assert "has no profile 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
