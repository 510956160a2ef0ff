"""The docs say what the code does, and build."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import attr
import docutils.core

from brigade_crgw.config import _SCHEMA, Config, field_name
from brigade_crgw.registries import NAMES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.rst").read_text()
INI = (ROOT / "etc" / "brigade-crgw.ini").read_text()


def page(name: str) -> str:
    """The text of ``docs/<name>.rst``."""
    return (DOCS / f"{name}.rst").read_text()


def test_readme_renders_cleanly() -> None:
    """README.rst is valid reStructuredText, without warnings."""
    errors = io.StringIO()
    docutils.core.publish_string(
        README,
        writer="null",
        settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": errors},
    )
    assert errors.getvalue() == ""


def test_readme_is_short_and_its_links_lead_somewhere() -> None:
    """README.rst stays a front page (at most 250 lines), keeps the
    two-command quickstart, and every file it links to exists."""
    assert len(README.splitlines()) <= 250
    assert "make run " in README and "make test " in README
    targets = re.findall(r"`[^`<]+<([^>`]+)>`_", README)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links no page of the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.rst links to missing files: {missing}"


def test_every_key_documented() -> None:
    """Every config key is in the configuration page and in the shipped ini."""
    text = page("configuration")
    fields = {f.name for f in attr.fields(Config)}
    keys = {field_name(name, key) for name, section in _SCHEMA.items() for key in section}
    assert keys == fields
    for section, section_keys in _SCHEMA.items():
        assert f"``[{section}]``" in text and f"[{section}]" in INI
        for key in section_keys:
            assert f"\n``{key}`` (" in text, key
            assert f"\n{key} =" in INI, key


def test_every_registry_has_its_page() -> None:
    """Each registry in REGISTRIES has its page under its name, listed in
    the registries' index and the README's table, and no page is left for
    a registry that is gone."""
    index = page("registries/index")
    for name in NAMES:
        text = page(f"registries/{name}")
        assert text.splitlines()[0].endswith(f"(``{name}``)"), name
        assert f"\n   {name}\n" in index, name
        assert f"``{name}``" in README, name
    pages = {p.stem for p in (DOCS / "registries").glob("*.rst")} - {"index"}
    assert pages == set(NAMES)


def test_architecture_names_every_module() -> None:
    """docs/architecture.rst names every module of the package, so the map
    cannot quietly fall behind the code."""
    text = page("architecture")
    package = ROOT / "brigade_crgw"
    modules = {
        p.relative_to(package).as_posix()
        for p in package.glob("**/*.py")
        if p.name != "__init__.py" and p.parent.name != "registries"
    }
    missing = sorted(m for m in modules if f"``{m}``" not in text)
    assert not missing, f"docs/architecture.rst does not name {missing}"
    assert "``registries/``" in text


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    """The Sphinx site builds as ``make docs`` builds it: every warning
    (a broken reference, a page outside the navigation, a bad directive)
    is an error."""
    where = (str(DOCS), str(tmp_path / "html"))
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", *where],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "html" / "registries" / "dockerhub.html").exists()
