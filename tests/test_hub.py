"""The Meltano Hub definition in meltano-hub/ is one the Hub accepts, and it tells the truth.

Checked against the Hub's own plugin schemas and yamllint rules (copies in
``../shared/reference/meltano-hub/``), and against what the target itself reports with
``--about``: the Hub file and ``meltano.yml`` declare exactly the settings ``--about`` lists, with
its defaults, kinds and choices.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HUB_DIR = ROOT / "meltano-hub" / "loaders" / "target-omnisend"
HUB_REFERENCE = SHARED / "reference" / "meltano-hub"
# --about's JSON types -> the Meltano setting kinds that may declare them.
KINDS = {
    "string": {"string", "options", "password", "date_iso8601", "file", "email"},
    "boolean": {"boolean"},
    "integer": {"integer"},
    "number": {"decimal", "integer"},
    "object": {"object"},
    "array": {"array"},
}


@pytest.fixture(scope="module")
def hub_reference() -> Path:
    """The Hub's schemas and lint rules; skips where ../shared is absent."""
    if not (HUB_REFERENCE / "yamllint.yaml").is_file():
        if os.environ.get("CI_REQUIRE_SHARED"):
            pytest.fail(f"{HUB_REFERENCE} is missing but CI_REQUIRE_SHARED is set")
        pytest.skip(f"../shared is absent ({HUB_REFERENCE}): the Hub's schemas are not available")
    return HUB_REFERENCE


def hub_file() -> Path:
    files = sorted(HUB_DIR.glob("*.yml"))
    assert len(files) == 1, files
    return files[0]


def hub() -> dict[str, Any]:
    return yaml.safe_load(hub_file().read_text(encoding="utf-8"))


def loader() -> dict[str, Any]:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    return next(p for p in project["plugins"]["loaders"] if p["name"] == "target-omnisend")


@cache
def about() -> dict[str, Any]:
    result = subprocess.run(
        [str(BIN / "target-omnisend"), "--about", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def schema_registry(schemas: Path) -> Registry:
    """Every Hub schema under its file URI, so `../common/...` references resolve."""
    resources = []
    for path in schemas.rglob("*.schema.json"):
        contents = json.loads(path.read_text(encoding="utf-8"))
        contents["$id"] = path.as_uri()
        resources.append((path.as_uri(), Resource.from_contents(contents)))
    return Registry().with_resources(resources)


def hub_errors(definition: dict[str, Any], reference: Path) -> list[str]:
    schemas = reference / "schemas"
    registry = schema_registry(schemas)
    root = (schemas / "plugin_definitions" / "loaders.schema.json").as_uri()
    validator = jsonschema.Draft7Validator(
        registry.contents(root), registry=registry, format_checker=jsonschema.FormatChecker()
    )
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(definition)]


def test_hub_definition_passes_the_hubs_schema(hub_reference: Path) -> None:
    assert hub_errors(hub(), hub_reference) == []


def test_the_schema_check_can_fail(hub_reference: Path) -> None:
    """What the issue found in the old file: no `quality`, a misspelt key, a wrong kind."""
    broken = hub()
    del broken["quality"]
    broken["maintainance_status"] = "active"
    broken["settings"][0]["kind"] = "text"
    errors = "\n".join(hub_errors(broken, hub_reference))
    assert "'quality' is a required property" in errors
    assert "maintainance_status" in errors
    assert "'text' is not one of" in errors


def yamllint(reference: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "yamllint"), "-f", "parsable", "-c", str(reference / "yamllint.yaml"), *paths],
        capture_output=True,
        text=True,
        check=False,
    )


def test_hub_definition_passes_the_hubs_lint_rules(hub_reference: Path) -> None:
    result = yamllint(hub_reference, ROOT / "meltano-hub")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lint_check_can_fail(hub_reference: Path, tmp_path: Path) -> None:
    unsorted = tmp_path / "unsorted.yml"
    unsorted.write_text("name: target-omnisend\ncapabilities: {a: b}\n", encoding="utf-8")
    result = yamllint(hub_reference, unsorted)
    assert result.returncode == 1
    assert "key-ordering" in result.stdout
    assert "braces" in result.stdout


def test_hub_metadata_follows_the_hubs_conventions() -> None:
    definition = hub()
    variant = definition["variant"]
    # The variant is the repository's GitHub owner (lower case), and the file is named after it.
    repo = urlsplit(definition["repo"])
    assert repo.netloc == "github.com"
    owner, name = repo.path.strip("/").split("/")
    assert owner.lower() == variant
    assert name == "target-omnisend"
    assert hub_file().name == f"{variant}.yml"
    assert definition["docs"] == f"https://hub.meltano.com/loaders/target-omnisend--{variant}"
    assert definition["pip_url"] == "target-omnisend"
    assert definition["name"] == HUB_DIR.name == about()["name"]
    assert definition["supported_python_versions"] == about()["supported_python_versions"]
    assert definition["quality"] in {"gold", "silver", "bronze", "unknown"}
    assert "meltano_sdk" in definition["keywords"]


def json_types(spec: dict[str, Any]) -> set[str]:
    types = spec["type"]
    return ({types} if isinstance(types, str) else set(types)) - {"null"}


def declared_names(settings: list[dict[str, Any]]) -> set[str]:
    """Setting names, a nested setting (`faker_config.seed`) counted as its parent."""
    return {setting["name"].split(".")[0] for setting in settings}


@pytest.mark.parametrize("source", ["meltano.yml", "meltano-hub"])
def test_declared_settings_are_the_abouts(source: str) -> None:
    settings = loader()["settings"] if source == "meltano.yml" else hub()["settings"]
    properties = about()["settings"]["properties"]
    assert declared_names(settings) == set(properties)
    for setting in settings:
        name, _, child = setting["name"].partition(".")
        spec = properties[name]
        if child:
            spec = spec["properties"][child]
            types = {t for option in spec["oneOf"] for t in json_types(option)}
            assert any(setting["kind"] in KINDS[t] for t in types), setting
            continue
        assert any(setting["kind"] in KINDS[t] for t in json_types(spec)), setting
        assert setting.get("value") == spec.get("default"), setting["name"]
        if "enum" in spec:
            assert setting["kind"] == "options", setting["name"]
            assert [option["value"] for option in setting["options"]] == spec["enum"]
        assert bool(setting.get("sensitive")) == bool(spec.get("secret") or spec.get("writeOnly"))


def test_hub_and_meltano_yml_declare_the_same_settings() -> None:
    fields = ("kind", "label", "description", "sensitive", "value", "options")
    by_name = {s["name"]: {k: s.get(k) for k in fields} for s in hub()["settings"]}
    assert by_name == {s["name"]: {k: s.get(k) for k in fields} for s in loader()["settings"]}
    assert hub()["capabilities"] == loader()["capabilities"]
    assert set(about()["capabilities"]) <= set(loader()["capabilities"])
