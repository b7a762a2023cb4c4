"""Issue 21 item 7: the image and CI install every package at the version in the committed constraints.txt.

The closure is computed the way pip resolves it: pyproject.toml's requirements with the extras asked for,
then each installed distribution's own requirements (markers evaluated here, extras followed). A
dependency added to pyproject.toml without refreshing constraints.txt fails here with the refresh hint.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
REFRESH = "refresh constraints.txt as its header says"


def pins(text: str | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (CONSTRAINTS.read_text() if text is None else text).splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)", line.strip())
        assert match, f"constraints.txt: {line!r} is not name==version"
        name = canonicalize_name(match.group(1))
        assert name not in out, f"constraints.txt: {name} twice"
        out[name] = match.group(2)
    return out


def closure(extras: set[str]) -> tuple[dict[str, str], list[tuple[str, Requirement]]]:
    """({package: installed version}, [(required by, requirement)]) of the project with ``extras``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    me = canonicalize_name(project["name"])
    todo = [(me, Requirement(r)) for r in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:  # the project's own extras, including self-references like plm-monitor[collector,detector]
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == me:
                pending += sorted(req.extras)
            else:
                todo.append((me, req))
    found: dict[str, str] = {}
    edges: list[tuple[str, Requirement]] = []
    done: set[tuple[str, str]] = set()
    while todo:
        parent, req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        edges.append((parent, req))
        name = canonicalize_name(req.name)
        for extra in sorted(req.extras) or [""]:
            if (name, extra) in done:
                continue
            done.add((name, extra))
            try:
                dist = metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                pytest.fail(f"{req.name} (needed by {parent}) is not installed: pip install -e '.[dev]'")
            found[name] = dist.version
            for text in dist.requires or []:
                sub = Requirement(text)
                if sub.marker is None or sub.marker.evaluate({"extra": extra}):
                    todo.append((name, Requirement(str(sub).split(";")[0])))
    return found, edges


def _dockerfile_extras() -> set[str]:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"pip install (?:-c|--constraint)[ =]constraints\.txt '?\.\[([a-z,-]+)\]'?", text)
    assert match, "the Dockerfile installs the project with -c constraints.txt"
    return set(match.group(1).split(","))


def test_constraints_pin_exactly_the_dev_closure():
    pinned = pins()
    needed, _ = closure({"dev"})
    missing = sorted(set(needed) - set(pinned))
    assert not missing, f"not pinned: {missing}; {REFRESH}"
    extra = sorted(set(pinned) - set(needed))
    assert not extra, f"pinned but not a dependency of '.[dev]': {extra}; {REFRESH}"


def test_every_pin_satisfies_every_requirement_on_it():
    """pip refuses constraints that contradict a requirement; this says which one, before a build does."""
    pinned = pins()
    _, edges = closure({"dev"})
    for parent, req in edges:
        version = pinned.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} not pinned; {REFRESH}"
        assert req.specifier.contains(version, prereleases=True), f"{parent} needs {req}, constraints.txt has {version}"


def test_the_image_installs_with_the_constraints_and_they_cover_its_extras():
    text = (ROOT / "Dockerfile").read_text()
    extras = _dockerfile_extras()
    assert {"collector", "detector"} <= extras
    copy = re.search(r"^COPY\s+([^\n]*\bconstraints\.txt\b[^\n]*)$", text, flags=re.M)
    assert copy and text.index(copy.group(0)) < text.index("-c constraints.txt"), "COPY constraints.txt first"
    assert "!constraints.txt" in (ROOT / ".dockerignore").read_text().splitlines(), ".dockerignore drops it"
    needed, _ = closure(extras)
    assert set(needed) <= set(pins()), f"the image's packages are not all pinned; {REFRESH}"


def test_ci_installs_with_the_same_constraints_before_the_readme_command():
    run = (ROOT / ".ci/run").read_text()
    command = "pip install -e '.[dev]' && python -m pytest"
    assert f"\n{command}\n" in run, ".ci/run calls the README's test command verbatim"
    assert command in (ROOT / "README.md").read_text()
    export = re.search(r'^export PIP_CONSTRAINT="\$PWD/constraints\.txt"$', run, flags=re.M)
    assert export and run.index(export.group(0)) < run.index(f"\n{command}\n")
    assert 'cd "$(dirname "$0")/.."' in run.split(export.group(0))[0]  # $PWD is the repository there


@pytest.mark.skipif(os.environ.get("PLM_REQUIRE_SERVICES") != "1", reason="CI only: a dev venv may be newer")
def test_ci_runs_with_the_pinned_versions():
    needed, _ = closure({"dev"})
    pinned = pins()
    differ = {name: (version, pinned.get(name)) for name, version in needed.items() if pinned.get(name) != version}
    assert not differ, f"installed vs constraints.txt: {differ} (PIP_CONSTRAINT not honoured?)"


def test_the_parser_refuses_ranges_and_duplicates():
    with pytest.raises(AssertionError, match="not name==version"):
        pins("numpy>=1.26\n")
    with pytest.raises(AssertionError, match="twice"):
        pins("PyYAML==6.0.3\npyyaml==6.0.3\n")
    assert pins("# comment\n\nJinja2==3.1.6\n") == {"jinja2": "3.1.6"}
