"""The package's layers call down, never up: checked on the import statements of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flowkern"

# rank of each top-level part of flowkern: a module may import parts of lower rank and its own part
RANK = {
    "_checks": 0,
    "_memory": 0,
    "spec": 1,
    "backends": 2,
    "ops": 3,
    "nn": 4,
    "check": 5,
    "compat": 6,
    "training": 6,
    "interpret": 7,
    "translate": 7,
    "train": 8,
    "cli": 9,
    "__main__": 10,
    "__init__": 9,
    "_build_info": 0,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the flowkern modules that ``path`` imports (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("flowkern.")}  # ``flowkern`` itself: the package, always loaded


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_only_lower_layers(path):
    own = _part(_module_name(path)) if path != PACKAGE / "__init__.py" else "__init__"
    assert own in RANK, f"{own} has no layer in RANK: add it"
    upward = sorted(m for m in _imports(path)
                    if _part(m) != own and _part(m) in RANK and RANK[_part(m)] >= RANK[own])
    assert not upward, f"{path.relative_to(ROOT)} ({own}, layer {RANK[own]}) imports upward: {upward}"


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert parts <= set(RANK), sorted(parts - set(RANK))


def test_example_experts_do_not_import_translate():
    """The example's experts sit beside Net2Net (on flowkern.training), not on it."""
    experts = ROOT / "examples" / "interpretation" / "experts.py"
    imported = {n.module for n in ast.walk(ast.parse(experts.read_text())) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(ast.parse(experts.read_text())) if isinstance(n, ast.Import)
                 for a in n.names}
    assert not any(m and "translate" in m for m in imported), imported
