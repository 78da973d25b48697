"""`microgpt vectors --out DIR`: the conformance vectors, every stage of the reference for a port to match.

    microgpt vectors --out vectors                      # all configs (minutes: the scalar engine; wide is most of it)
    microgpt vectors --out vectors --configs unicode    # some of them

For each config (CONFIGS) it writes DIR/<config>/:

    config.json         the model and training config, the data's SHA-256, header counts, the stress factor,
                        and every forward name with the line of atomic.py that computes it
    rng.json            Python's random for the config's seed: random(), gauss, getrandbits(32), a shuffled
                        range(20), choices with fixed weights, each from a freshly seeded generator
    tokens.json         the characters, BOS, and the first 100 documents after the shuffle, as tokens
    init.safetensors    the initial weights (float64, params.py's names)
    forward.safetensors every intermediate of step 1's forward pass under `microgpt trace`'s names
                        (p<pos>[.l<layer>][.h<head>].<variable>[.<repeat>]), the logits and probabilities
                        of every position, the loss, and a stress test (stress.logits, stress.probs): the
                        same positions with lm_head multiplied by a power of two, so that the largest logit
                        exceeds 800 and exp() overflows unless the softmax subtracts the max
    grads.safetensors   step 1's gradient of every parameter
    adam.safetensors    after step 1: m.<name>, v.<name> and the updated weights param.<name>
    losses.json         the loss of every step (full precision; the default config trains 1000 steps and
                        is atomic.py's own run, the others 100), and the lines the run prints
    samples.json        the 20 samples after training
    final.safetensors   the weights after training
    input.txt           the data, when it is not the embedded names

and DIR/manifest.json: the project's version, the configs, and the SHA-256 of every file.
Everything is computed by the scalar engine (atomic.py's own Value graph, engines/scalar.py) and the
forward intermediates by atomic.py's gpt() itself, watched by tools/recorder.py (`microgpt trace`).
"""

import hashlib
import json
import math
import os
import random
import shutil
import sys

from microgpt import __version__, durable
from microgpt.atomic import Value, gpt, softmax
from microgpt.checkpoint import read_safetensors, write_safetensors
from microgpt.config import ModelConfig, TrainConfig, lr_at, to_dict
from microgpt.errors import UsageError
from microgpt.params import num_params
from microgpt.run import Run
from microgpt.sample import generate
from microgpt.tensor import Tensor
from microgpt.tools.trace import data_of, walk_step

FORMAT = 1
NUM_TOKENIZED = 100  # documents written as tokens, and steps written for the configs of 100 steps
STRESS_LOGIT = 800.0  # exp(800) overflows a double (the largest argument is about 709.78)

# The non-ASCII config's file: names in many scripts, with accents and characters of 1 to 4 UTF-8 bytes.
UNICODE_NAMES = ("José", "Zoë", "Chloé", "Renée", "Søren", "Björn", "Łukasz", "Ørjan", "Iñaki", "François",
                 "Jürgen", "Małgorzata", "Đorđe", "Şükrü", "Çağla", "Émile", "Ἀθηνᾶ", "Ελένη", "Юлия",
                 "Дмитрий", "李娜", "王芳", "さくら", "ゆうき", "지민", "서연", "Ayşe", "Noémie", "Anaïs",
                 "Maëlle", "Håkon", "Åsa", "Øystein", "Ignacy", "Žofie", "Tomáš", "Ľubica", "Ğülşen",
                 "أمل", "נועה", "Ruairí", "Siobhán", "Þórunn", "Eðvarð", "Dũng", "Nguyễn", "Zoë🙂")

# name -> (model fields, seed, steps, data): data None is the embedded names, "unicode" the file above
CONFIGS = {
    "default": ({}, 42, 1000, None),
    "wide": ({"n_layer": 2, "n_embd": 32, "n_head": 2}, 42, NUM_TOKENIZED, None),
    "block8": ({"block_size": 8}, 42, NUM_TOKENIZED, None),
    "seed7": ({}, 7, NUM_TOKENIZED, None),
    "unicode": ({}, 42, NUM_TOKENIZED, "unicode"),
}
TRAIN_FIELDS = ("seed", "steps", "lr", "beta1", "beta2", "eps", "temperature", "samples")  # what a port needs
RNG_COUNT = 8
CHOICE_WEIGHTS = [0.1, 0.2, 0.3, 0.4]


def cache_dir() -> str:
    """Where `microgpt conform` keeps vectors it generated ($MICROGPT_CACHE, else ~/.cache/microgpt)."""
    root = os.environ.get("MICROGPT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "microgpt")
    return os.path.join(root, f"vectors-{__version__}")


# ---- what each stage is --------------------------------------------------------------------------
def rng_vectors(seed: int, sigma: float) -> dict:
    """Python's random, the reference's generator: each list from a generator seeded afresh."""
    r, g, b, s, c = (random.Random(seed) for _ in range(5))
    shuffled = list(range(20))
    s.shuffle(shuffled)
    return {"seed": seed,
            "random": [r.random() for _ in range(RNG_COUNT)],
            "gauss": {"mu": 0, "sigma": sigma, "values": [g.gauss(0, sigma) for _ in range(RNG_COUNT)]},
            "getrandbits": {"k": 32, "values": [b.getrandbits(32) for _ in range(RNG_COUNT)]},
            "shuffle": {"n": 20, "values": shuffled},
            "choices": {"weights": CHOICE_WEIGHTS,
                        "values": [c.choices(range(len(CHOICE_WEIGHTS)), weights=CHOICE_WEIGHTS)[0]
                                   for _ in range(2 * RNG_COUNT)]}}


def sequence(run: Run, doc: str) -> list[int]:
    """[BOS] + ids + [BOS], not cut (training cuts it to block_size + 1)."""
    bos = run.tokenizer.bos
    return [bos] + run.tokenizer.encode(doc) + [bos]


def shape_of(value) -> tuple:
    return (len(value),) + shape_of(value[0]) if isinstance(value, list) else ()


def flatten(value) -> list[float]:
    return [x for v in value for x in flatten(v)] if isinstance(value, list) else [float(value)]


def tensor(value) -> Tensor:
    return Tensor.from_floats(shape_of(value), flatten(value))


def record_names(records) -> list[tuple[str, object]]:
    """(name, record) for the recorded intermediates: p<pos>[.l<layer>][.h<head>].<variable>, with .1,
    .2, ... for a variable bound again in the same position, layer and head (x is bound many times)."""
    seen, out = {}, []
    for rec in records:
        scope = f"p{rec.pos_id}" + (f".l{rec.layer}" if rec.layer is not None else "") + \
                (f".h{rec.head}" if rec.head is not None else "")
        base = f"{scope}.{rec.name}"
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.append((base if k == 0 else f"{base}.{k}", rec))
    return out


def stress_forward(run: Run, tokens: list[int]) -> tuple[float, list, list]:
    """The initial model's logits and probabilities at each position of `tokens`, with lm_head times a
    power of two (exact: every logit is scaled by it) chosen so the largest logit exceeds STRESS_LOGIT."""
    cfg = run.model

    def forward(factor):
        state_dict = {name: [[Value(x * (factor if name == "lm_head" else 1.0)) for x in row] for row in t.rows()]
                      for name, t in run.params.items()}
        keys, values = [[] for _ in range(cfg.n_layer)], [[] for _ in range(cfg.n_layer)]
        logits = [gpt(tokens[p], p, keys, values, state_dict, cfg.n_layer, cfg.n_head) for p in range(len(tokens) - 1)]
        return [[l.data for l in row] for row in logits], [[p.data for p in softmax(row)] for row in logits]

    plain, _ = forward(1.0)
    largest = max(max(row) for row in plain)
    factor = 2.0 ** max(0, math.ceil(math.log2(STRESS_LOGIT / largest))) if largest > 0 else 2.0 ** 40
    logits, probs = forward(factor)
    return factor, logits, probs


# ---- one config ----------------------------------------------------------------------------------
def fresh_run(name: str, data_path: str | None, spec=None) -> Run:
    model, seed, steps, _ = spec or CONFIGS[name]
    return Run.fresh(ModelConfig(**model), TrainConfig(seed=seed, steps=steps), data_path)


def data_file(out: str, name: str, data) -> str | None:
    """The config's data as a file in its folder (None: the embedded names)."""
    if data is None:
        return None
    path = os.path.join(out, name, "input.txt")
    if data == "unicode":
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(UNICODE_NAMES) + "\n")
    else:
        shutil.copyfile(data, path)  # byte for byte: the file the port reads
    return path


def write_config(out: str, name: str, spec=None, log=None) -> None:
    """Compute and write DIR/<name>/ (see the module docstring)."""
    spec = spec or CONFIGS[name]
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    run = fresh_run(name, data_file(out, name, spec[3]), spec)
    cfg, tcfg = run.model, run.train
    say = log or (lambda msg: None)
    say(f"{name}: {cfg.n_layer} layers, width {cfg.n_embd}, {cfg.n_head} heads, block {cfg.block_size}, "
        f"seed {tcfg.seed}, {tcfg.steps} steps, {len(run.docs)} documents")
    dump = lambda file, obj: _write_json(os.path.join(folder, file), obj)
    save = lambda file, tensors: write_safetensors(os.path.join(folder, file), tensors, {"format": str(FORMAT)})

    dump("rng.json", rng_vectors(tcfg.seed, cfg.init_std))
    docs = run.docs[:NUM_TOKENIZED]
    dump("tokens.json", {"chars": run.tokenizer.chars, "bos": run.tokenizer.bos, "vocab_size": cfg.vocab_size,
                         "num_docs": len(run.docs), "docs": docs, "tokens": [sequence(run, d) for d in docs]})
    save("init.safetensors", dict(run.params))

    # step 1's forward, as atomic.py's gpt() computes it, watched by the recorder
    traced = walk_step(run, run.docs[0])
    forward = {n: tensor(data_of(rec.value)) for n, rec in record_names(traced["records"])}
    positions = traced["positions"]
    forward["logits"] = tensor([[v.data for v in rec.value] for rec in traced["records"] if rec.name == "logits"])
    forward["probs"] = tensor([[p.data for p in at["probs"]] for at in positions])
    forward["loss"] = tensor(traced["loss"])
    factor, stress_logits, stress_probs = stress_forward(run, traced["tokens"])
    forward["stress.logits"], forward["stress.probs"] = tensor(stress_logits), tensor(stress_probs)
    save("forward.safetensors", forward)

    # the scalar engine: step 1's gradients, then training, with Adam's state after step 1
    engine = run.engine("scalar")
    loss1, grads = engine.loss_and_grads(run.data.batch(0, 1))
    if loss1 != traced["loss"]:
        raise AssertionError(f"{name}: the scalar engine's loss {loss1!r} differs from atomic.py's {traced['loss']!r}")
    save("grads.safetensors", grads)
    losses = []
    for step in range(tcfg.steps):
        losses.append(engine.train_step(run.data.batch(step, 1), step, lr_at(step, tcfg)))
        if step == 0:
            state = engine.state()
            save("adam.safetensors", {**{f"m.{n}": state[f"adam.m.{n}"] for n in run.params},
                                      **{f"v.{n}": state[f"adam.v.{n}"] for n in run.params},
                                      **{f"param.{n}": t for n, t in engine.weights().items()}})
        if (step + 1) % 100 == 0:
            say(f"{name}: step {step + 1} / {tcfg.steps}, loss {losses[-1]:.4f}")
    samples = [generate(engine, run.tokenizer, cfg.block_size, run.rng, tcfg.temperature) for _ in range(tcfg.samples)]
    save("final.safetensors", engine.weights())
    header = [f"num docs: {len(run.docs)}", f"vocab size: {cfg.vocab_size}", f"num params: {num_params(cfg)}"]
    printed = header + [f"step {i + 1:4d} / {tcfg.steps:4d} | loss {x:.4f}" for i, x in enumerate(losses)] + \
        ["--- samples ---"] + [f"sample {i + 1:2d}: {s}" for i, s in enumerate(samples)]
    dump("losses.json", {"losses": losses, "printed": printed})
    dump("samples.json", {"temperature": tcfg.temperature, "samples": samples})
    dump("config.json", {"name": name, "model": to_dict(cfg), "train": {k: to_dict(tcfg)[k] for k in TRAIN_FIELDS},
                         "data": {"file": "input.txt" if spec[3] is not None else None,
                                  "embedded_names": spec[3] is None, "sha256": run.data_info["sha256"]},
                         "num_docs": len(run.docs), "vocab_size": cfg.vocab_size, "num_params": num_params(cfg),
                         "step1_doc": run.docs[0], "stress_lm_head_factor": factor,
                         "forward": [{"name": n, "shape": list(forward[n].shape), "line": rec.lineno,
                                      "code": rec.code} for n, rec in record_names(traced["records"])]})


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
        f.write("\n")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(out: str) -> str:
    """DIR/manifest.json: the version, the configs present and the SHA-256 of every file."""
    files = {}
    for root, _, names in os.walk(out):
        for n in sorted(names):
            path = os.path.join(root, n)
            rel = os.path.relpath(path, out).replace(os.sep, "/")
            if rel != "manifest.json" and not n.endswith(".tmp"):
                files[rel] = sha256(path)
    configs = sorted({rel.split("/")[0] for rel in files if rel.endswith("/config.json")})
    path = os.path.join(out, "manifest.json")
    _write_json(path, {"format": FORMAT, "microgpt_version": __version__, "configs": configs,
                       "files": dict(sorted(files.items()))})
    return path


# ---- reading them back ---------------------------------------------------------------------------
FILES = ("config.json", "rng.json", "tokens.json", "init.safetensors", "forward.safetensors", "grads.safetensors",
         "adam.safetensors", "losses.json", "samples.json", "final.safetensors")  # every config has them


def holds_only_vectors(out: str) -> bool:
    """Whether writing vectors into `out` replaces nothing but vectors: it is missing or empty, has our
    manifest.json, or holds only config folders of vector files (a run stopped before its manifest)."""
    if not os.path.isdir(out) or os.path.exists(os.path.join(out, "manifest.json")):
        return True
    ours = lambda file: file in FILES or file == "input.txt" or file.endswith(".tmp")   # .tmp: a killed write's
    return all(name in CONFIGS and os.path.isdir(os.path.join(out, name))
               and all(map(ours, os.listdir(os.path.join(out, name)))) for name in os.listdir(out))


def read_manifest(out: str) -> dict | None:
    """DIR/manifest.json, checked: {"configs": [names], "files": {relative path: SHA-256}, ...}; None when
    DIR has none. A damaged one is a one-line error that says to write the vectors again."""
    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        manifest, why = None, f"not valid JSON: {e}"
    else:
        why = "not a JSON object with a list of 'configs' and a 'files' object of SHA-256s"
    if not (isinstance(manifest, dict) and isinstance(manifest.get("configs"), list)
            and all(isinstance(n, str) for n in manifest["configs"]) and isinstance(manifest.get("files"), dict)
            and all(isinstance(d, str) for d in manifest["files"].values())):
        raise UsageError(f"{path} is damaged ({why}); write the vectors again with: microgpt vectors --out {out}")
    return manifest


def load(out: str, name: str) -> dict:
    """Everything in DIR/<name>/, checked against the manifest's SHA-256: {file stem: JSON or tensors}."""
    manifest = read_manifest(out)
    if manifest is None:
        raise UsageError(f"{out} holds no vectors (no manifest.json); write them with: microgpt vectors --out {out}")
    if name not in manifest["configs"]:
        raise UsageError(f"{out} has no vectors for config {name!r} (it has: {', '.join(manifest['configs'])}); "
                         f"add them with: microgpt vectors --out {out} --configs {name}")
    again = f"write them again with: microgpt vectors --out {out} --configs {name}"
    out_data = {}
    for rel, digest in manifest["files"].items():
        if not rel.startswith(name + "/"):
            continue
        path = os.path.join(out, rel)
        if not os.path.exists(path) or sha256(path) != digest:
            raise UsageError(f"{path} is missing or changed since the vectors were written; {again}")
        stem, ext = os.path.splitext(os.path.basename(rel))
        if ext == ".json":
            with open(path, encoding="utf-8") as f:
                out_data[stem] = json.load(f)
        elif ext == ".safetensors":
            out_data[stem] = read_safetensors(path)[0]
    missing = [file for file in FILES if os.path.splitext(file)[0] not in out_data]
    if missing:
        raise UsageError(f"{os.path.join(out, 'manifest.json')} lists no {name}/{missing[0]}: the vectors are "
                         f"incomplete; {again}")
    out_data["folder"] = os.path.join(out, name)
    return out_data


def ensure(out: str, name: str, spec=None, log=None) -> dict:
    """The vectors of one config in DIR, written first if DIR lacks them."""
    manifest = read_manifest(out)
    if manifest is None or name not in manifest["configs"]:
        write_config(out, name, spec, log)
        write_manifest(out)
    return load(out, name)


# ---- the command line ----------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="directory to write the vectors into")
    p.add_argument("--configs", help=f"comma-separated configs (default all: {', '.join(CONFIGS)})")


def run(args) -> int:
    names = args.configs.split(",") if args.configs else list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise UsageError(f"unknown config {unknown[0]!r}; choose from: {', '.join(CONFIGS)}")
    durable.refuse_broken_link(args.out)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a file; give a directory for the vectors")
    if not holds_only_vectors(args.out):
        raise UsageError(f"--out {args.out} is a non-empty folder that is not microgpt's vectors; give a new or empty "
                         f"folder, so that nothing of yours is overwritten")
    os.makedirs(args.out, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    for name in names:
        write_config(args.out, name, log=log)
    path = write_manifest(args.out)
    print(f"wrote {', '.join(names)} and {path}")
    return 0
