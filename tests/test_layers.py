"""The package's shape: no import cycles, and checkpoints of the previous format still load and resume.

    python -m pytest -q tests/test_layers.py
"""

import ast
import json
import os
import struct

import pytest

from microgpt import checkpoint
from microgpt.config import TrainConfig
from microgpt.run import Run
from microgpt.tensor import Tensor
from tiny_run import train

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "microgpt")


def imports_of(path: str) -> set[str]:
    """Every microgpt module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("microgpt"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from microgpt import checkpoint`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("microgpt"))
    return found


def test_no_import_cycles():
    modules = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                modules[rel.removesuffix(".__init__")] = os.path.join(root, f)
    # `from microgpt import checkpoint` names the top package too; its __init__ runs before any module of
    # it, so it takes part in a cycle only through imports at its own top level: there must be none
    top = ast.parse(open(modules["microgpt"], encoding="utf-8").read()).body
    assert not [n for n in top if isinstance(n, (ast.Import, ast.ImportFrom)) and "microgpt" in ast.dump(n)], \
        "microgpt/__init__.py imports the package's modules at its top level"
    graph = {m: {i for i in imports_of(p) if i in modules and i not in (m, "microgpt")} for m, p in modules.items()}
    graph["microgpt"] = set()
    # a module's package __init__ runs when the module is imported: count it as an import
    for m in graph:
        parent = m.rsplit(".", 1)[0]
        if parent != m and parent in modules and parent != "microgpt":
            graph[m].add(parent)
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(path + [m])
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


def as_format_1(out_dir: str, into: str) -> None:
    """Rewrite a checkpoint as the previous format laid it out: no format_version 2, the torch engine's
    --ema weights as train.<name>, and Muon's momentum as adam.m.<name> beside zeros as adam.v.<name>."""
    tensors, metadata = checkpoint.read_safetensors(checkpoint.path_in(out_dir))
    meta = json.loads(metadata["microgpt"])
    meta["format_version"] = 1
    old = {}
    for name, t in tensors.items():
        if name.startswith("ema.trained."):
            old["train." + name[len("ema.trained."):]] = t
        elif name.startswith("muon.momentum."):
            param = name[len("muon.momentum."):]
            old["adam.m." + param] = t
            old["adam.v." + param] = Tensor(t.shape, t.dtype, bytes(len(t.data)))
        else:
            old[name] = t
    os.makedirs(into, exist_ok=True)
    checkpoint.write_safetensors(checkpoint.path_in(into), old, {"microgpt": json.dumps(meta)})
    header_len = struct.unpack("<Q", open(checkpoint.path_in(into), "rb").read(8))[0]
    assert header_len > 0


def resume_both(tmp_path, tcfg):
    model = {"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 8}
    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    train(model, tcfg, None, new, stop_after=3)
    as_format_1(new, old)
    for d in (new, old):
        train(model, tcfg, None, d, resume=True)
    return Run.load(new), Run.load(old)


def test_a_format_1_checkpoint_loads_and_resumes_exactly(tmp_path):
    a, b = resume_both(tmp_path, TrainConfig(steps=6, samples=0))
    assert a.step == b.step == 6 and a.params == b.params and a.state == b.state


def test_a_format_1_torch_checkpoint_with_muon_and_ema_resumes_exactly(tmp_path):
    pytest.importorskip("torch", reason="the torch engine needs torch: pip install torch")
    a, b = resume_both(tmp_path, TrainConfig(engine="torch", steps=6, batch_size=3, samples=0, optimizer="muon",
                                             ema=0.8))
    assert {n.split(".")[0] for n in a.state} == {"adam", "muon", "ema"} and a.state.keys() == b.state.keys()
    assert a.params == b.params and a.state == b.state


def test_resume_refuses_a_checkpoint_without_the_optimizer_state(tmp_path, capsys):
    out = str(tmp_path / "run")
    train({"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 8}, TrainConfig(steps=6, samples=0), None, out,
          stop_after=2)
    tensors, metadata = checkpoint.read_safetensors(checkpoint.path_in(out))
    checkpoint.write_safetensors(checkpoint.path_in(out), {n: t for n, t in tensors.items()
                                                           if not n.startswith("adam.")}, metadata)
    from microgpt.cli import main
    assert main(["train", "--out", out, "--resume"]) == 2
    assert "lacks adam.m.wte" in capsys.readouterr().err
