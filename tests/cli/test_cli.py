"""The command line as a newcomer meets it: a help listing without torch, one spelling per shared option, a help
text for every option of every command, and the pre-release spellings gone (nothing was released to keep them for)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
from conftest import REPO

import nystra_hub
from nystra_hub.attention import ATTENTION_REGISTRY
from nystra_hub.cli import SUBCOMMANDS, build_parser, main
from nystra_hub.cli.options import ATTN_CHOICES, parse_nystra
from nystra_hub.cli.reports import default_output

HELP_PROBE = """
import sys
from nystra_hub_cli import main
for argv in (["--help"], ["--version"], []):
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    print("EXIT", code)
print("HEAVY", sorted(m for m in ("torch", "transformers", "timm", "nystra_hub") if m in sys.modules))
"""


def test_help_and_version_answer_without_importing_torch():
    proc = subprocess.run([sys.executable, "-c", HELP_PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout  # nothing heavy imported: the listing takes a fraction of a second
    assert proc.stdout.count("EXIT 0") == 2 and "EXIT 2" in proc.stdout  # no command: the help, exit 2
    assert nystra_hub.__version__ in proc.stdout.splitlines()
    for name in SUBCOMMANDS:
        assert name in proc.stdout


def test_console_script_is_the_light_entry_point():
    script = re.search(r'^nystra-hub = "(.*)"$', (REPO / "pyproject.toml").read_text(), flags=re.M).group(1)
    assert script == "nystra_hub_cli:main"


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_option_has_a_help_text(command):
    sub = _subparser(command)
    visible = [a for a in sub._actions if a.help != argparse.SUPPRESS]
    missing = [a.option_strings or a.dest for a in visible if not a.help]
    assert missing == [], f"nystra-hub {command}: options without help {missing}"
    sub.format_help()  # every help string formats (no stray %)


@pytest.mark.parametrize("command", ["restore", "convert", "eval", "export"])
def test_shared_options_are_spelled_alike(command):
    options = {s for a in _subparser(command)._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
    assert {"--attn", "--nystra"} <= options


@pytest.mark.parametrize("command", ["restore", "convert", "eval", "export"])
def test_attn_offers_every_implementation_of_the_package(command):
    """The built-ins and 'flex', in the registry's order; the comparison baselines are measurement arms only."""
    choices = next(a for a in _subparser(command)._actions if "--attn" in a.option_strings).choices
    assert list(choices) == ["softmax", "sdpa", "nystra", "flex"] == list(ATTN_CHOICES)
    assert all(name in ATTENTION_REGISTRY for name in choices)


def test_parse_nystra_key_value_only():
    assert parse_nystra(["landmarks=16", "tau=2.5", "bias=drop"]) == {"landmarks": 16, "tau": 2.5, "bias": "drop"}
    with pytest.raises(ValueError, match="KEY=VALUE"):  # the pre-release JSON spelling is gone
        parse_nystra(['{"landmarks": 8}'])
    with pytest.raises(ValueError, match="unknown parameter.*landmark"):
        parse_nystra(["landmark=16"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_nystra(["16"])


def test_the_pre_release_attn_impl_spelling_is_gone(capsys):
    parser = build_parser("convert")
    with pytest.raises(SystemExit):
        parser.parse_args(["convert", "x.pth", "--out", "o", "--attn-impl", "nystra"])
    assert "unrecognized arguments: --attn-impl" in capsys.readouterr().err
    assert parser.parse_args(["convert", "x.pth", "--out", "o"]).attn == "softmax"


def test_missing_input_is_a_message_not_a_traceback(tmp_path, capsys):
    code = main(["eval", "--model", str(REPO / "reference_models" / "swinir-ref-x2"), "--lq", str(tmp_path / "no"),
                 "--gt", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "is not a folder" in err and "Traceback" not in err


def test_measurement_defaults_are_short_and_work_outside_a_checkout(tmp_path, monkeypatch, capsys):
    args = build_parser("bench").parse_args(["bench", "--model", "swinir-x2"])
    assert args.sizes == [64] and args.runs == 3  # minutes on a CPU; the cards' runs say --sizes 256 512 --runs 5
    assert "--sizes 256 512 --runs 5" in _subparser("bench").format_help().replace("\n", " ").replace("  ", " ")
    monkeypatch.chdir(REPO)
    assert str(default_output("bench-x-cpu")) == "benchmarks/bench-x-cpu.json"
    assert str(default_output("fidelity-x")) == "benchmarks/fidelity-x.json"
    monkeypatch.chdir(tmp_path)  # no benchmarks/ here: the current folder
    assert str(default_output("bench-x-cpu")) == "bench-x-cpu.json"
    assert str(default_output("fidelity-x")) == "fidelity-x.json"
    code = main(["fidelity", "--model", str(REPO / "reference_models" / "swinir-ref-x2"), "--testsets",
                 str(tmp_path / "no-testsets"), "--arms", "a", "--landmarks", "--landmarks-enlarged"])
    err = capsys.readouterr().err
    assert code == 2 and "test images not found" in err and "--testsets" in err and "Traceback" not in err
