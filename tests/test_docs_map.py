"""docs/development.md's map of the code matches the tree, both ways: every module under rsb_composer/ and callbacks/
(a package by its folder, ``rsb_composer/config/``) and every folder under scripts/ is named in the map by its path,
and every path the map names exists (a folder as a folder, a file as a file)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import REPO

PAGE = REPO / "docs" / "development.md"
MAP_HEADING = "## The map of the code"
PACKAGES = ("rsb_composer", "callbacks")
# A path in a code span that starts at one of the repository's top-level folders.
PATH = re.compile(r"`((?:rsb_composer|callbacks|scripts|yamls|tests|docs|requirements|\.ci)(?:/[\w.\-]*)*)`")


def map_section(text: str) -> str:
    """The map: from its heading to the next heading of the same level."""
    assert MAP_HEADING in text, f"docs/development.md has no {MAP_HEADING!r} section"
    section = text.split(MAP_HEADING, 1)[1]
    return re.split(r"^## ", section, maxsplit=1, flags=re.MULTILINE)[0]


def named_paths(section: str) -> set[str]:
    return set(PATH.findall(section))


def tree_paths(root: Path) -> set[str]:
    """What the map must name: each module by its path, each package by its folder (``name/``), and each folder
    under scripts/."""
    found = set()
    for top in PACKAGES:
        for path in (root / top).rglob("*.py"):
            relative = path.relative_to(root)
            found.add(f"{relative.parent}/" if path.name == "__init__.py" else str(relative))
    found |= {f"{p.relative_to(root)}/" for p in (root / "scripts").iterdir() if p.is_dir()}
    return found


def mismatches(root: Path, section: str) -> tuple[list[str], list[str]]:
    """(in the tree but not in the map, named in the map but not in the tree)."""
    named = named_paths(section)
    missing = sorted(tree_paths(root) - named)
    absent = sorted(p for p in named if not ((root / p).is_dir() if p.endswith("/") else (root / p).is_file()))
    return missing, absent


def test_the_map_names_every_module_and_every_path_it_names_exists():
    missing, absent = mismatches(REPO, map_section(PAGE.read_text()))
    assert not missing, f"docs/development.md's map lacks (add a row each): {missing}"
    assert not absent, f"docs/development.md's map names what the tree does not have: {absent}"


def test_a_module_missing_from_the_map_and_a_stale_row_are_found(tmp_path):
    for path in ("rsb_composer/__init__.py", "rsb_composer/data/__init__.py", "rsb_composer/data/new.py",
                 "rsb_composer/model.py", "callbacks/__init__.py", "callbacks/top_k.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    (tmp_path / "scripts" / "slurm").mkdir(parents=True)
    (tmp_path / "yamls").mkdir()
    section = map_section(
        "# Dev\n\n## The map of the code\n\n| Path | Owns |\n|---|---|\n"
        "| `rsb_composer/` | the package |\n| `rsb_composer/data/` | data |\n| `rsb_composer/model.py` | model |\n"
        "| `rsb_composer/gone.py` | a deleted module |\n| `rsb_composer/model.py/` | a file named as a folder |\n"
        "| `callbacks/` | callbacks |\n| `scripts/slurm/` | sbatch |\n| `yamls/` | recipes |\n\n"
        "## Tests\n\n`callbacks/top_k.py` named outside the map does not count\n")
    missing, absent = mismatches(tmp_path, section)
    assert missing == ["callbacks/top_k.py", "rsb_composer/data/new.py"]
    assert absent == ["rsb_composer/gone.py", "rsb_composer/model.py/"]


def test_the_map_keeps_the_order_a_run_goes_through():
    """The stages as the page promises them: recipe, checks, launch, data, model, optimizer, algorithms, trainer,
    callbacks and loggers, checkpoints and run folder, tools."""
    section = map_section(PAGE.read_text())
    firsts = ["rsb_composer/config/", "rsb_composer/recipe.py", "rsb_composer/launch.py", "rsb_composer/data/",
              "rsb_composer/model.py", "rsb_composer/optim.py", "rsb_composer/algorithms.py",
              "rsb_composer/trainer.py", "callbacks/", "rsb_composer/checkpoints/", "rsb_composer/cli.py"]
    positions = [section.index(f"| `{path}` |") for path in firsts]  # each one's row
    assert positions == sorted(positions), "the map's stages are out of the run's order"
