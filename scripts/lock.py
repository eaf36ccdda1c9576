"""Write requirements.txt and constraints.txt from pyproject.toml and the environment the suite passed in.

    python scripts/lock.py           # rewrite both files
    python scripts/lock.py --check   # exit 1 if requirements.txt is out of date (the test suite runs this check)

requirements.txt is pyproject.toml's runtime dependencies, one per line, for tools that read
requirements files. constraints.txt pins the exact version of every package that
`pip install -e ".[dev]"` installs (the dependencies of the project and of its dev extra,
followed through the installed packages' own metadata): `.ci/run` installs with it, and so can
anyone who wants the versions the suite last passed with:

    pip install torch==2.13.0 && pip install -c constraints.txt -e ".[dev]"

Run it (without --check) after the suite passes with new versions, and commit both files.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS_HEAD = (
    "# Runtime dependencies, written from pyproject.toml by scripts/lock.py (do not edit by hand).\n"
    "# Install torch first where you want a particular build: `pip install torch==2.13.0` (CPU) or a CUDA\n"
    "# build from pytorch.org. Exact versions the test suite passed with: constraints.txt.\n"
)
CONSTRAINTS_HEAD = (
    "# The exact versions the test suite last passed with, written by scripts/lock.py (do not edit by hand):\n"
    "#   pip install torch==2.13.0 && pip install -c constraints.txt -e \".[dev]\"\n"
)


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements_text() -> str:
    return REQUIREMENTS_HEAD + "".join(f"{line}\n" for line in project()["dependencies"])


def closure(roots: list[str]) -> dict[str, str]:
    """Every installed distribution the requirement strings `roots` need, with their extras,
    followed through installed metadata: canonical name -> installed version."""
    environment = default_environment()
    found: dict[str, str] = {}
    todo = [(Requirement(text), set()) for text in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement, extras_of_parent = todo.pop()
        marker = requirement.marker
        if marker is not None and not any(
            marker.evaluate({**environment, "extra": extra}) for extra in (extras_of_parent or {""})
        ):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            missing = f"{requirement.name} is not installed: install the project with its dev extra first"
            raise SystemExit(missing) from None
        found[name] = distribution.version
        todo.extend((Requirement(text), set(requirement.extras)) for text in distribution.requires or [])
    return found


def constraints_text() -> str:
    info = project()
    roots = [*info["dependencies"], *info["optional-dependencies"]["dev"]]
    pins = closure(roots)
    pins.pop(canonicalize_name(info["name"]), None)
    if "torch" in pins:  # the CPU build reads 2.13.0+cpu: a constraint names the release
        pins["torch"] = pins["torch"].split("+")[0]
    return CONSTRAINTS_HEAD + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that requirements.txt is up to date")
    args = parser.parse_args()
    wanted = {"requirements.txt": requirements_text()}
    if not args.check:
        wanted["constraints.txt"] = constraints_text()
    if args.check:
        stale = [name for name, text in wanted.items() if (ROOT / name).read_text() != text]
        if stale:
            raise SystemExit(f"{', '.join(stale)} differs from pyproject.toml: run python scripts/lock.py")
        return
    for name, text in wanted.items():
        (ROOT / name).write_text(text)
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
