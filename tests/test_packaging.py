"""Installs that cannot drift: requirements.txt is pyproject.toml's dependencies, and
constraints.txt pins every package the project and its dev extra name (what CI installs)."""

from __future__ import annotations

import importlib.util
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT


def lock_script():
    spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["lock"] = module
    spec.loader.exec_module(module)
    return module


def test_requirements_txt_is_what_pyproject_toml_depends_on() -> None:
    assert (ROOT / "requirements.txt").read_text() == lock_script().requirements_text()


def test_constraints_txt_pins_every_package_the_project_names() -> None:
    lock = lock_script()
    info = lock.project()
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[canonicalize_name(name)] = version
    for text in [*info["dependencies"], *info["optional-dependencies"]["dev"]]:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate():
            name = canonicalize_name(requirement.name)
            assert name in pinned and requirement.specifier.contains(pinned[name]), (name, pinned.get(name))
    assert (ROOT / ".ci" / "run").read_text().count("-c constraints.txt") == 1
