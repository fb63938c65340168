"""README.md stays true: its settings reference is the target's own `--about` output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README = ROOT / "README.md"
START, END = "<!-- about:start -->", "<!-- about:end -->"


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def about_block(text: str) -> str:
    assert text.count(START) == 1
    assert text.count(END) == 1
    return text[text.index(START) + len(START) : text.index(END)].strip()


def test_settings_reference_matches_about_output() -> None:
    about = subprocess.run(
        [str(BIN / "target-omnisend"), "--about", "--format", "markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert about_block(readme_text()) == about, (
        "README.md is stale: run .venv/bin/python scripts/update_readme_about.py"
    )


@pytest.mark.parametrize("script", ["update_readme_about.py", "update_hub_definition.py"])
def test_update_script_check_mode_agrees(script: str) -> None:
    """README's settings reference and the Hub file are what their scripts generate."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_two_commands_come_first() -> None:
    text = readme_text()
    first_block = text[: text.index("## Quick start")]
    assert "make demo" in first_block
    assert "make test" in first_block


def test_every_loader_setting_in_meltano_yml_is_documented() -> None:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    loader = project["plugins"]["loaders"][0]
    text = readme_text()
    for setting in loader["settings"]:
        assert re.search(rf"`{re.escape(setting['name'])}`|\| {setting['name']} \|", text), setting[
            "name"
        ]


def test_meltano_yml_declares_every_setting_the_target_knows() -> None:
    about = subprocess.run(
        [str(BIN / "target-omnisend"), "--about", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    properties = json.loads(about)["settings"]["properties"]
    project = yaml.safe_load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    loader = project["plugins"]["loaders"][0]
    declared = {setting["name"]: setting for setting in loader["settings"]}
    # The SDK's settings too; a nested one (faker_config.seed) is declared under its parent.
    assert set(properties) == {name.split(".")[0] for name in declared}
    for setting in declared.values():
        assert setting.get("kind")
        assert setting.get("label")
        assert setting.get("description")
    assert declared["api_key"]["sensitive"] is True
    assert declared["api_key"]["kind"] == "string"
    assert set(json.loads(about)["capabilities"]) <= set(loader["capabilities"])
