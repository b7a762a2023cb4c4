"""The package layout is the architecture (docs/architecture.md "The packages"): each package may import only
the packages listed for it, so a change to a sink, a transport or a tool cannot reach into scoring."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DETECTOR_SUBPACKAGES = ("scoring", "storage", "live", "recordings", "reporting")

# unit -> the units it may import (besides itself); "detector" is the detector's command modules
ALLOWED: dict[str, set[str]] = {
    "plm": set(),
    "plm.ops": {"plm", "collector", "simulator", "detector", *(f"detector.{p}" for p in DETECTOR_SUBPACKAGES)},
    "collector": {"plm"},
    "simulator": {"plm"},
    "detector.scoring": {"plm"},
    "detector.storage": {"plm"},
    "detector.live": {"plm", "detector.scoring", "detector.storage"},
    "detector.recordings": {"plm", "detector.scoring", "detector.storage", "detector.live"},
    "detector.reporting": {"plm", "detector.storage", "detector.scoring"},
    "detector": {"plm", *(f"detector.{p}" for p in DETECTOR_SUBPACKAGES)},
}


def unit_of_module(name: str) -> str | None:
    """The layer a dotted module name belongs to, or None for third-party and standard modules."""
    parts = name.split(".")
    if parts[0] == "detector":
        return f"detector.{parts[1]}" if len(parts) > 1 and parts[1] in DETECTOR_SUBPACKAGES else "detector"
    if parts[0] == "plm":
        return "plm.ops" if len(parts) > 1 and parts[1] == "ops" else "plm"
    if parts[0] in ("collector", "simulator"):
        return parts[0]
    return None


def imported_units(path: Path) -> set[str]:
    units: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        units.update(u for u in map(unit_of_module, names) if u)
    return units


def package_modules() -> list[Path]:
    return sorted(p for pkg in ("plm", "collector", "simulator", "detector") for p in (ROOT / pkg).rglob("*.py"))


def test_every_module_belongs_to_a_known_unit() -> None:
    for path in package_modules():
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        assert unit_of_module(module) in ALLOWED, f"{module} is in no unit of docs/architecture.md"


def test_imports_follow_the_layers() -> None:
    wrong = []
    for path in package_modules():
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        unit = unit_of_module(module)
        assert unit is not None
        if extra := imported_units(path) - ALLOWED[unit] - {unit}:
            wrong.append(f"{module} ({unit}) imports {sorted(extra)}; allowed: {sorted(ALLOWED[unit])}")
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from detector.storage import schema\nimport plm.ops.broker\n")
    assert imported_units(bad) == {"detector.storage", "plm.ops"}
    assert not {"detector.storage", "plm.ops"} <= ALLOWED["detector.scoring"]
