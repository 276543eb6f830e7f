"""The CLI's shared helpers: a duration option reads by the settings' one rule."""

from __future__ import annotations

import pytest
import typer

from jobrunner.config.settings import parse_duration
from jobrunner.worker.cli.base import duration_s


@pytest.mark.parametrize("text", ["90", "90s", "30m", "1.5h", "7d", " 7 d "])
def test_a_duration_option_reads_as_a_setting_does(text: str) -> None:
    assert duration_s(text, "--older-than") == parse_duration(text)


@pytest.mark.parametrize("text", ["soon", "-5", "7w", "1h30m", ""])
def test_a_bad_duration_option_is_a_one_line_error(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit):
        duration_s(text, "--older-than")
    assert capsys.readouterr().err == (
        f"jobrunner: error: --older-than {text!r} is not a duration like 7d, 12h, 30m or 90\n"
    )
    with pytest.raises(ValueError):
        parse_duration(text)
