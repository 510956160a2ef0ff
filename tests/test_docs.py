"""The docs say what the code does."""

from __future__ import annotations

import io
from pathlib import Path

import attr
import docutils.core

from brigade_crgw.config import _SCHEMA, Config, field_name
from brigade_crgw.registries import NAMES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.rst").read_text()
INI = (ROOT / "etc" / "brigade-crgw.ini").read_text()


def test_readme_renders_cleanly() -> None:
    """README.rst is valid reStructuredText, without warnings."""
    errors = io.StringIO()
    docutils.core.publish_string(
        README,
        writer="null",
        settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": errors},
    )
    assert errors.getvalue() == ""


def test_every_key_documented() -> None:
    """Every config key is in the README's reference and in the shipped ini."""
    fields = {f.name for f in attr.fields(Config)}
    keys = {field_name(name, key) for name, section in _SCHEMA.items() for key in section}
    assert keys == fields
    for section, section_keys in _SCHEMA.items():
        assert f"``[{section}]``" in README and f"[{section}]" in INI
        for key in section_keys:
            assert f"``{key}``" in README, key
            assert f"\n{key} =" in INI, key


def test_every_registry_in_the_table() -> None:
    """Each registry has its row in the README, under its name."""
    for name in NAMES:
        assert f"(``{name}``)" in README, name


def test_architecture_names_every_module() -> None:
    """docs/architecture.md names every module of the package, so the map
    cannot quietly fall behind the code."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "brigade_crgw"
    modules = {
        p.relative_to(package).as_posix()
        for p in package.glob("**/*.py")
        if p.name != "__init__.py" and p.parent.name != "registries"
    }
    missing = sorted(m for m in modules if f"`{m}`" not in text)
    assert not missing, f"docs/architecture.md does not name {missing}"
    assert "`registries/`" in text
