"""The layers of the code (README, The code): each imports only those below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import track

ROOT = Path(next(iter(track.__path__)))
BELOW = {
    "errors": set(),
    "schemas": {"errors"},
    "transforms": {"schemas", "errors"},
    "settings": {"schemas", "errors"},
    "lake": {"settings", "transforms", "schemas", "errors"},
    "reader": {"lake", "settings", "transforms", "schemas", "errors"},
    "flows": {"lake", "settings", "transforms", "schemas", "errors"},
    "report": {"reader", "lake", "settings", "transforms", "schemas", "errors"},
    "api": {"reader", "lake", "settings", "transforms", "schemas", "errors"},
    "cli": {
        "flows",
        "api",
        "report",
        "reader",
        "lake",
        "settings",
        "transforms",
        "schemas",
        "errors",
    },
}
"""What each layer (a folder or a top-level module of the package) may import of Track."""


def _layer(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "track" and len(parts) > 1 and parts[1] in BELOW:
                found.add(parts[1])
    return found


MODULES = sorted(
    path
    for layer in BELOW
    for path in [ROOT / f"{layer}.py", *(ROOT / layer).glob("*.py")]
    if path.exists()
)


def test_every_layer_has_its_modules():
    assert {_layer(p) for p in MODULES} == set(BELOW)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_the_layers_below_its_own(path):
    layer = _layer(path)
    assert _imported_layers(path) <= BELOW[layer] | {layer}
