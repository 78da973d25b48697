"""Every install hint names our distribution (microgpt-atomic), never PyPI's unrelated `microgpt`.

Hints are found two ways: by scanning the package's source for strings that say `pip install`, and by
triggering each missing-dependency error (numpy, torch, matplotlib, tensorboard) and reading what it
prints.

    python -m pytest -q tests/test_install_hints.py
"""

import ast
import builtins
import importlib.util
import os
import re
import tomllib

import pytest

from conftest import REPO
from microgpt import engines
from microgpt.cli import main
from microgpt.errors import UsageError
from microgpt.install import DISTRIBUTION, hint

PYPROJECT = os.path.join(REPO, "pyproject.toml")
WRONG_NAME = re.compile(r"(?<![\w-])micro" r"gpt\[")  # e.g. the extra numpy of the other project


def project() -> dict:
    with open(PYPROJECT, "rb") as f:
        return tomllib.load(f)["project"]


def python_files(*folders):
    for folder in folders:
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            yield from (os.path.join(root, f) for f in files if f.endswith(".py"))


def printed_strings(path: str) -> list[str]:
    """The string literals of a file that are not docstrings (f-strings with their fixed parts joined)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append(node.value)
        elif isinstance(node, ast.JoinedStr):
            found.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values))
    return found


def test_the_distribution_is_ours_and_keeps_the_command_and_the_import_name():
    meta = project()
    assert meta["name"] == DISTRIBUTION == "microgpt-atomic"
    assert meta["scripts"]["microgpt"] == "microgpt:run_cli"
    assert importlib.util.find_spec("microgpt") is not None


def test_every_pip_install_string_in_the_code_comes_from_the_one_hint():
    """A hint written by hand anywhere but microgpt/install.py could name the wrong distribution."""
    writers = {os.path.relpath(path, REPO) for path in python_files("microgpt")
               if any("pip install" in s for s in printed_strings(path))}
    assert writers == {os.path.join("microgpt", "install.py")}


def test_no_file_names_the_other_projects_distribution():
    paths = [*python_files("microgpt", "tests", "scripts"), os.path.join(REPO, "README.md"), PYPROJECT,
             os.path.join(REPO, "scripts", "test.sh")]
    offenders = [f"{os.path.relpath(p, REPO)}: {line.strip()}" for p in paths if os.path.exists(p)
                 for line in open(p, encoding="utf-8") if WRONG_NAME.search(line)]
    assert offenders == []


@pytest.mark.parametrize("extra", ["numpy", "torch", "report", "tensorboard"])
def test_the_hint_names_a_real_extra_of_our_distribution(extra):
    text = hint(extra, "x")
    assert f"pip install '{DISTRIBUTION}[{extra}]'" in text and f"pip install -e '.[{extra}]'" in text
    assert extra in project()["optional-dependencies"]


@pytest.mark.parametrize("name", [name for name, (_, lib, _) in engines.ENGINES.items() if lib])
def test_a_missing_engine_library_prints_our_distribution(name, monkeypatch):
    """Every engine that needs a library: the error names the extra of the same name, which exists."""
    lib = engines.ENGINES[name][1]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == lib else real(mod, *a))
    with pytest.raises(UsageError) as error:
        engines.get(name)
    assert f"pip install '{DISTRIBUTION}[{name}]'" in str(error.value) and name in project()["optional-dependencies"]
    assert f"pip install {lib} " in str(error.value)  # what works anywhere, today


def block_imports(monkeypatch, *blocked):
    real_import = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.split(".")[0] in blocked:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_report_without_matplotlib_prints_our_distribution(tmp_path, monkeypatch, capsys):
    block_imports(monkeypatch, "matplotlib")
    assert main(["report", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"pip install '{DISTRIBUTION}[report]'" in err and err.count("\n") == 1


def test_tensorboard_logging_without_a_writer_prints_our_distribution(tmp_path, monkeypatch, capsys):
    block_imports(monkeypatch, "tensorboardX", "torch", "tensorboard")
    assert main(["train", "--steps", "1", "--samples", "0", "--log", "tensorboard", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"pip install '{DISTRIBUTION}[tensorboard]'" in err and err.count("\n") == 1
