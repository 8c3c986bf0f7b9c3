"""The pure parts of `clawops service`: the env file format, the unit text, the platform choice
and the command runner (real files, real subprocesses, systemd's own verifier)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from core.envfile import load_env_file, parse_env, render_env
from core.errors import ConfigError, InstallError
from core.install import ServiceId, ServiceSpec, detect_platform, render_systemd
from core.svcctl import run_command

AWKWARD = [
    "plain",
    "",
    "with space",
    "it's",
    'a "double" one',
    "back\\slash and $HOME and `tick`",
    "both ' and \" and \\",
    "  padded  ",
    "#not-a-comment",
    "ünïcode",
]


def test_every_value_survives_a_round_trip_through_the_env_file():
    values = {f"V{i}": value for i, value in enumerate(AWKWARD)}
    assert parse_env(render_env(values, header="two\nlines")) == values


def test_a_masked_env_file_shows_no_value():
    text = render_env({"TOKEN": "s3cret-value"}, masked=True)
    assert "s3cret" not in text and "TOKEN='***'" in text


@pytest.mark.parametrize("value", ["two\nlines", "cr\rhere", "nul\0byte"])
def test_a_value_with_a_line_break_cannot_be_written(value):
    with pytest.raises(InstallError, match="TOKEN holds a line break"):
        render_env({"TOKEN": value})


def test_the_forms_systemd_reads_are_read_the_same_way():
    text = (
        '  # comment\n; another\n\nA=plain value  \nB="a\\"b\\\\c\\$d\\e"\nC=\'\'\nD=\n'
        "E=  'spaced'  \n"
    )
    assert parse_env(text) == {
        "A": "plain value",
        "B": 'a"b\\c$d\\e',  # systemd keeps a backslash before an ordinary character
        "C": "",
        "D": "",
        "E": "spaced",
    }


@pytest.mark.parametrize(
    "line",
    [
        "A='x'y",  # systemd would glue y on; refused rather than guessed
        "A=x'y",
        'A="open',
        "A='open",
        "export A=1",
        "A B=1",
        "1A=1",
        "A=x\\y",
        "# a comment that ends with \\",
    ],
)
def test_a_line_outside_the_shared_format_is_refused_by_number(line):
    with pytest.raises(ConfigError) as caught:
        parse_env(f"OK='fine'\n{line}\n", "f.env")
    assert [p.key for p in caught.value.problems] == ["line 2"]


def private_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.env"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_loading_never_replaces_a_variable_already_set(tmp_path):
    path = private_env(tmp_path, "A='from-file'\nB='from-file'\n")
    environ = {"A": "from-shell"}
    assert load_env_file(path, environ) == ["B"]
    assert environ == {"A": "from-shell", "B": "from-file"}


def test_loading_refuses_a_file_others_can_read_and_changes_nothing(tmp_path):
    path = private_env(tmp_path, "A='x'\n")
    path.chmod(0o640)
    environ: dict[str, str] = {}
    with pytest.raises(ConfigError, match="mode 0640"):
        load_env_file(path, environ)
    assert environ == {}


def test_loading_refuses_a_symlink(tmp_path):
    real = private_env(tmp_path, "A='x'\n")
    link = tmp_path / "link.env"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="symlink"):
        load_env_file(link, {})


def test_windows_is_refused_with_what_to_do_instead():
    with pytest.raises(InstallError, match="Task Scheduler or NSSM"):
        detect_platform("win32")
    assert detect_platform("win32", "linux") == "linux"
    assert detect_platform("darwin") == "macos" and detect_platform("linux") == "linux"


def test_a_unit_path_needs_an_absolute_program_and_no_line_break(tmp_path):
    ident = ServiceId("node", "linux", tmp_path, os.getuid())
    common = dict(working_dir=tmp_path, log_dir=tmp_path, env_file=tmp_path / "e")
    with pytest.raises(InstallError, match="absolute"):
        ServiceSpec(ident, ("clawops", "run"), **common)  # type: ignore[arg-type]
    with pytest.raises(InstallError, match="line break"):
        ServiceSpec(ident, ("/bin/clawops", "run", "a\nb"), **common)  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_percent_and_dollar_in_paths_reach_systemd_unchanged(tmp_path):
    # If % or $ were not escaped, systemd would expand them and not find the program.
    folder = tmp_path / "bin 100% $HOME"
    folder.mkdir()
    program = folder / "clawops"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    spec = ServiceSpec(
        ServiceId("node", "linux", tmp_path, os.getuid()),
        (str(program), "run", "--config", str(folder / "c.toml")),
        working_dir=folder,
        log_dir=folder / "logs",
        env_file=folder / "clawops.env",
    )
    unit = tmp_path / "clawops.service"
    unit.write_text(render_systemd(spec))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr


def test_a_missing_command_is_an_answer_not_a_crash():
    result = run_command(["clawops-no-such-tool"], 5)
    assert result.returncode == 127 and "command not found" in result.stderr


def test_a_command_and_its_children_are_killed_at_the_timeout():
    result = run_command(["sh", "-c", "sleep 60 & sleep 60"], 0.2)
    assert result.returncode is None and "no answer within 0.2 s" in result.stderr
