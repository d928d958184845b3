"""The code's shape: no import cycles (imports inside functions count), no module over 300 lines, and the config
package importing nothing else of the project."""

import ast

import pytest

from tests.helpers import REPO

PACKAGES = ("rsb_composer", "callbacks")


def _modules() -> dict[str, ast.Module]:
    found = {}
    for top in PACKAGES:
        for path in (REPO / top).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def _imports(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module -> the project's modules it imports (a package's own submodules importing it excluded)."""
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    edges[name].add(target)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = _cycle(_imports(_modules()))
    assert cycle is None, " -> ".join(cycle)


def test_a_planted_cycle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_the_config_package_imports_nothing_else_of_the_project():
    edges = _imports(_modules())
    for name, targets in edges.items():
        if name == "rsb_composer.config" or name.startswith("rsb_composer.config."):
            outside = {t for t in targets if not t.startswith("rsb_composer.config")}
            assert not outside, f"{name} imports {outside}"


@pytest.mark.parametrize("top", [*PACKAGES, "tests", "scripts"])
def test_no_module_is_over_300_lines(top):
    long = {str(p.relative_to(REPO)): n for p in (REPO / top).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long


def test_callbacks_depend_on_composer_and_the_run_folder_only():
    edges = _imports(_modules())
    for name, targets in edges.items():
        if name.startswith("callbacks"):
            project = {t for t in targets if t.startswith("rsb_composer")}
            assert project <= {"rsb_composer.run_folder"}, f"{name} imports {project}"


# The layers above the builders: what loads and checks a recipe, assembles the trainer, and the commands.
UPPER = ("rsb_composer.recipe", "rsb_composer.trainer", "rsb_composer.train", "rsb_composer.cli", "rsb_composer.tools")


def _upper(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in UPPER)


def test_builders_never_import_the_layers_above_them():
    """Dependencies point one way (config <- builders <- recipe/trainer/tools <- cli), lazy imports included."""
    edges = _imports(_modules())
    upward = {name: sorted(t for t in targets if _upper(t)) for name, targets in edges.items()
              if name.startswith("rsb_composer.") and not _upper(name)}
    assert {name: targets for name, targets in upward.items() if targets} == {}


def test_train_py_is_a_thin_script_that_imports_nothing_heavy():
    """The launcher's script: its path fix, arguments and exit statuses; the assembly lives in trainer.py. Importing
    it (the Python API) neither exits nor imports Composer, which reads the rank variables the script checks first."""
    import subprocess
    import sys

    script = (REPO / "rsb_composer" / "train.py").read_text()
    assert script.count("noqa") <= 2
    probe = "import sys, rsb_composer.train; print(sorted(m for m in ('composer', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
    assert "def __getattr__" in script and "from rsb_composer.trainer import build_trainer" in script
