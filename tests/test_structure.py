"""The shape of the house: no import cycles, and `pip install .` gives a working `facet-atlas` command."""
import ast
import shutil
import subprocess
import venv
from pathlib import Path

from conftest import ROOT


def local_imports(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, in function bodies too (lazy imports are still edges),
    but not under `if TYPE_CHECKING:`, nor in a package `__init__`'s functions: its lazy `__getattr__`
    facade (`precompute.build_atlas`) imports on attribute access, never when a module imports the package."""
    modules = {p.relative_to(package.parent).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__"): p
               for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in (tree.body if path.name == "__init__.py" else ast.walk(tree)):
            if isinstance(node, ast.ImportFrom) and node.level and id(node) not in typing_only:
                base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                target = f"{base}.{node.module}" if node.module else base
                deps |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                found.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_engine_has_no_import_cycle():
    graph = local_imports(ROOT / "precompute")
    assert "precompute.pipeline.executors" in graph["precompute.pipeline.atlas"]          # the builder hands work to executors,
    assert "precompute.pipeline.atlas" not in graph["precompute.pipeline.executors"]      # which do not reach back
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import x\n"
                                  "def f():\n    from . import a\n")
    (package / "c.py").write_text("from .b import f\n")
    assert cycles(local_imports(package)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_pip_install_gives_the_facet_atlas_command(tmp_path):
    source = tmp_path / "src"   # a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    for name in ("precompute", "dashboard"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)   # torch & co. from this machine
    python, command = env_dir / "bin" / "python", env_dir / "bin" / "facet-atlas"
    # the venv's own old setuptools would shadow this machine's (no bdist_wheel): build with the latter, offline
    subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", "setuptools"], check=True, capture_output=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)],
                   check=True, capture_output=True, timeout=300)
    where = subprocess.run([python, "-c", "import precompute; print(precompute.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert str(env_dir) in where                                        # the installed copy, not the checkout
    pages = subprocess.run([python, "-c", "from precompute.export import vendor; "
                            "print(all((vendor.WEB / name).is_file() for name in vendor.PAGES))"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert pages.strip() == "True"                                      # export's pages come with the package
    usage = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: facet-atlas")
    layers = subprocess.run([command, "layers"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert layers.returncode == 0, layers.stderr
    assert [line.split()[0] for line in layers.stdout.splitlines()[1:4]] == ["conv1", "conv2", "conv3"]
    wrong = subprocess.run([command, "layers", "--model", "nosuch"], cwd=tmp_path, capture_output=True, text=True)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: unknown model 'nosuch'")


def test_the_dashboard_reads_only_the_engines_torch_free_core():
    """What the hosted image copies (precompute/__init__.py and precompute/core/) is all it imports;
    a rerun and a lookup reach the engine through the package's lazy facade, where allowed."""
    found = set()
    for path in (ROOT / "dashboard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("precompute"):
                found |= {node.module if node.module != "precompute" else f"precompute:{a.name}" for a in node.names}
    assert found and all(name.startswith("precompute.core") for name in found - {"precompute:rerun_neuron", "precompute:Lookup"}), found
