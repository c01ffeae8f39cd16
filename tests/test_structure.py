"""The shape of the repository (see ../shared/DESIGN.md): import direction, layout, a light CLI,
and no downloaded artefacts committed."""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ASSETS, ROOT

# realtime -> engines -> train: a package may import only the packages below it.
FORBIDDEN = {"train": {"engines", "realtime"}, "engines": {"realtime"}}

# Imported inside the commands that need them, never by `mega-rt --help` (DESIGN.md, style 9).
HEAVY = {
    "torch",
    "torchvision",
    "cv2",
    "ultralytics",
    "onnx",
    "onnxruntime",
    "tensorrt",
    "torch_tensorrt",
    "moderngl",
    "cupy",
    "smplx",
}


def _imported_top_packages(source: str, module: str) -> list[tuple[int, str]]:
    """(line, top-level package) for every import in `source`, the text of `module` (a path
    relative to the repository root, e.g. 'train/model/mega.py'), relative imports resolved."""
    tree = ast.parse(source, filename=module)
    package = list(Path(module).with_suffix("").parts)[:-1]  # a module's (or __init__'s) package
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, (node.module or "").split(".")[0]))
                continue
            target = package[: max(len(package) - (node.level - 1), 0)] + (
                node.module.split(".") if node.module else []
            )
            if target:
                found.append((node.lineno, target[0]))
            else:  # `from ... import realtime`, climbing to the repository root
                found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.Call):
            # importlib.import_module("engines.x") / __import__("realtime") with a literal name
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
                    found.append((node.lineno, arg.value.split(".")[0]))
    return found


def _py_files(pkg: str) -> list[Path]:
    return sorted(p for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_import_checker_sees_absolute_relative_and_dynamic_imports():
    src = (
        "import engines.load\nfrom realtime import cli\nfrom ...engines import x\n"
        "from ... import realtime\nimport importlib\nimportlib.import_module('engines.verify')\n"
        "from . import mega\nfrom ..geometry import rot6d\nfrom .. import engines\n"
    )
    tops = [t for _, t in _imported_top_packages(src, "train/model/probe.py")]
    assert tops.count("engines") == 3 and tops.count("realtime") == 2
    assert tops.count("train") == 3  # `from .. import engines` here is train.engines, not engines
    assert [t for _, t in _imported_top_packages("from . import x\n", "train/__init__.py")] == ["train"]


@pytest.mark.parametrize("pkg", sorted(FORBIDDEN))
def test_imports_only_point_down(pkg):
    files = _py_files(pkg)
    assert files, f"{pkg}/ has no Python files"
    bad = [
        f"{p.relative_to(ROOT)}:{line} imports {top}"
        for p in files
        for line, top in _imported_top_packages(p.read_text(), str(p.relative_to(ROOT)))
        if top in FORBIDDEN[pkg]
    ]
    assert not bad, f"imports must point down (realtime -> engines -> train): {bad}"


@pytest.mark.parametrize(
    "entry", ["realtime/", "train/", "engines/", "configs/", "tests/", "pyproject.toml", "README.md"]
)
def test_required_top_level_entries_exist(entry):
    p = ROOT / entry.rstrip("/")
    assert p.is_dir() if entry.endswith("/") else p.is_file(), f"missing {entry} at the repository root"


def _cli(*args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    """Run `mega-rt ARGS` in a fresh interpreter: the installed console script when there is one,
    else the same entry point through `python -c` (also used for `-X importtime`)."""
    script = Path(sys.executable).parent / "mega-rt"
    if script.is_file() and not importtime:
        cmd = [str(script), *args]
    else:
        entry = "from realtime.cli import main; main(prog_name='mega-rt')"
        cmd = [sys.executable] + (["-X", "importtime"] if importtime else []) + ["-c", entry, *args]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPROFILEIMPORTTIME"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def _imported_modules(importtime_stderr: str) -> set[str]:
    mods = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                mods.add(name)
    return mods


def _commands() -> list[str]:
    from realtime.cli import main

    return sorted(main.commands)


def test_help_lists_the_commands_and_nothing_else():
    out = _cli("--help")
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", f"--help wrote to stderr: {out.stderr!r}"
    assert out.stdout.startswith("Usage:")
    lines = out.stdout.splitlines()
    start = lines.index("Commands:") + 1
    listed = [line.split()[0] for line in lines[start:] if line.startswith("  ") and not line.startswith("   ")]
    assert sorted(listed) == _commands()
    assert {"info", "fetch"} <= set(listed)


@pytest.mark.parametrize("args", [["--help"]] + [[c, "--help"] for c in _commands()], ids=" ".join)
def test_help_does_not_import_heavy_libraries(args):
    out = _cli(*args, importtime=True)
    assert out.returncode == 0, out.stderr[-2000:]
    mods = _imported_modules(out.stderr)
    assert "realtime.cli" in mods  # the importtime trace really covers the CLI
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
    assert not heavy, f"`mega-rt {' '.join(args)}` imported {heavy[:5]}: import them inside the command"


def test_import_cli_does_not_import_torch():
    code = (
        "import sys, realtime.cli; bad = sorted(m for m in sys.modules if m.split('.')[0] in %r); assert not bad, bad"
        % HEAVY
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _git_files(*args: str) -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (or git is not installed)")
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return [ROOT / p for p in out.stdout.decode().split("\0") if p]


def test_no_shared_asset_is_committed():
    if not ASSETS.is_dir():
        pytest.skip(f"shared assets not found at {ASSETS} (set MEGA_RT_ASSETS)")
    shared = {}
    for p in ASSETS.rglob("*"):
        if p.is_file() and p.stat().st_size > 0:
            shared.setdefault(p.stat().st_size, {})[_sha256(p)] = p
    # tracked files, and the untracked ones `git add -A` would pick up
    candidates = _git_files() + _git_files("--others", "--exclude-standard")
    committed = []
    for p in candidates:
        if p.is_file() and not p.is_symlink():
            by_sha = shared.get(p.stat().st_size)
            if by_sha and (hit := by_sha.get(_sha256(p))):
                committed.append(f"{p.relative_to(ROOT)} == {hit}")
    assert not committed, f"shared assets belong in ../shared or the cache, not the repository: {committed}"


# The one exception: the small demo weights the package ships (train/demo.py), kept small. The budget
# holds three fp16 networks: the tokenizer (~5 MB, mostly its spiral-conv weights, whose shapes the
# official checkpoint fixes), the reduced MEGA (~7 MB) and a YOLO11n detector (~5 MB, the smallest
# ultralytics model); growing past it means the demo grew a fourth network or stopped storing fp16.
DEMO_WEIGHTS = "train/demo_weights/"
DEMO_WEIGHTS_MAX_BYTES = 20 << 20


def test_no_built_engines_or_weights_committed():
    suffixes = {".plan", ".engine", ".onnx", ".pt", ".pth", ".ckpt", ".safetensors", ".npy", ".npz", ".avi", ".mp4"}
    files = [p for p in _git_files() if p.suffix.lower() in suffixes]
    bad = [str(p.relative_to(ROOT)) for p in files if not str(p.relative_to(ROOT)).startswith(DEMO_WEIGHTS)]
    assert not bad, f"artefacts belong in the cache folder, not the source tree: {bad}"
    demo = sum(p.stat().st_size for p in files if p.is_file() and str(p.relative_to(ROOT)).startswith(DEMO_WEIGHTS))
    assert demo <= DEMO_WEIGHTS_MAX_BYTES, (
        f"{DEMO_WEIGHTS} holds {demo / 2**20:.1f} MiB; the shipped demo must stay small"
    )


def test_import_graph_finds_a_circle_hidden_in_a_function(tmp_path):
    from tests.import_graph import import_cycles, import_graph

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "__init__.py").write_text("")
    (tmp_path / "train" / "a.py").write_text("from train import b\n")
    (tmp_path / "train" / "b.py").write_text("def f():\n    from .a import x\n")
    (tmp_path / "train" / "c.py").write_text("import train.a\n")
    graph = import_graph(tmp_path)
    assert graph["train.c"] == {"train.a"}
    assert import_cycles(graph) == [["train.a", "train.b"]]


def test_no_import_circles():
    from tests.import_graph import import_cycles, import_graph

    cycles = import_cycles(import_graph(ROOT))
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_private_name_is_imported_from_another_module():
    """A helper two modules need is public in one of them (or in a module both import), never `_private`."""
    ours = ("train", "engines", "realtime", "tests")
    bad = []
    for p in (f for pkg in ours for f in _py_files(pkg)):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ours:
                bad += [f"{p.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad
