"""A conformance dump of a Python file shaped like atomic.py, taken while it runs as a program.

    python tests/atomic_dump.py ATOMIC.py DUMP.json VECTORS/CONFIG [STEPS]   (in a folder holding input.txt)

It runs ATOMIC.py (atomic.py itself, or a test's edited copy of it) as `__main__`, and a trace hook on
that file's top-level frame reads its variables at the lines that end each stage: the shuffled `docs`
and `uchars` at the vocab print, `state_dict` at the num params print (the initial weights), `logits`
at each `probs = softmax(logits)` of step 1, every `p.grad` when the lr line of step 1 starts, `m`, `v`
and the weights at step 1's print, every `loss.data` at the step prints and every `sample` at the
sample prints. At step 1's lr line, the stress test calls the file's own gpt() and softmax() on the initial weights with
lm_head scaled by the vectors' factor, with math.exp giving inf on overflow as C's exp does. The
random-stream entries are Python's random's own, which such a file uses. The dump is JSON in the format
`microgpt conform --dump` reads (README, "Porting microgpt"); only the config's name and the random
stream's parameters are read from the vectors, never their values. With STEPS, the program is
stopped after that many steps (the dump then has no samples).
"""

import json
import math
import os
import random
import runpy
import sys


class Stop(Exception):
    pass


def main(atomic_path: str, dump_path: str, config_dir: str, stop_after: str | None = None) -> None:
    with open(os.path.join(config_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    with open(os.path.join(config_dir, "rng.json"), encoding="utf-8") as f:
        rng_spec = json.load(f)
    atomic_path = os.path.abspath(atomic_path)
    with open(atomic_path, encoding="utf-8") as f:
        source = f.read().splitlines()
    line_of = lambda text: next(i + 1 for i, line in enumerate(source) if text in line)
    at_vocab, at_params = line_of('print(f"vocab size'), line_of('print(f"num params')
    at_probs, at_lr = line_of("probs = softmax(logits)"), line_of("lr_t = learning_rate")
    at_step, at_sample = line_of('print(f"step {step'), line_of('print(f"sample {')

    seed = config["train"]["seed"]
    dump = {"config": config["name"], **rng_entries(seed, rng_spec)}
    logits_step1, losses, samples = [], [], []

    def rows(matrices, value):
        return {name: [[value(p) for p in row] for row in mat] for name, mat in matrices.items()}

    def on_line(frame, event, arg):
        if event != "line":
            return on_line
        g, line = frame.f_globals, frame.f_lineno
        if line == at_vocab:
            docs, uchars = g["docs"], g["uchars"]
            bos = len(uchars)
            dump["num_docs"] = len(docs)
            dump["tokens"] = [[bos] + [uchars.index(c) for c in d] + [bos] for d in docs[:100]]
        elif line == at_params:
            dump["vocab_size"], dump["num_params"] = g["vocab_size"], len(g["params"])
            for name, value in rows(g["state_dict"], lambda p: p.data).items():
                dump[f"init.{name}"] = value
        elif line == at_probs and g["step"] == 0:
            logits_step1.append([x.data for x in g["logits"]])
        elif line == at_lr and g["step"] == 0:
            dump["forward.logits"], dump["forward.loss"] = logits_step1, g["loss"].data
            dump.update(stress(g, {n: dump[f"init.{n}"] for n in g["state_dict"]}, config["stress_lm_head_factor"]))
            for name, value in rows(g["state_dict"], lambda p: float(p.grad)).items():
                dump[f"grad.{name}"] = value
        elif line == at_step:
            losses.append(g["loss"].data)
            if g["step"] == 0:
                flat_m, flat_v, offset = g["m"], g["v"], 0
                for name, mat in g["state_dict"].items():
                    size = len(mat) * len(mat[0])
                    cols = len(mat[0])
                    for key, flat in (("m", flat_m), ("v", flat_v)):
                        chunk = flat[offset:offset + size]
                        dump[f"adam.{key}.{name}"] = [chunk[r * cols:(r + 1) * cols] for r in range(len(mat))]
                    dump[f"adam.param.{name}"] = [[p.data for p in row] for row in mat]
                    offset += size
            if stop_after is not None and len(losses) >= int(stop_after):
                raise Stop
        elif line == at_sample:
            samples.append("".join(g["sample"]))
        return on_line

    def on_call(frame, event, arg):
        if frame.f_code.co_filename == atomic_path and frame.f_code.co_name == "<module>":
            return on_line
        return None

    sys.settrace(on_call)
    try:
        runpy.run_path(atomic_path, run_name="__main__")
    except Stop:
        pass
    finally:
        sys.settrace(None)
        dump["losses"], dump["samples"] = losses, samples
        with open(dump_path, "w", encoding="utf-8") as f:
            json.dump(dump, f, ensure_ascii=False)


def rng_entries(seed: int, spec: dict) -> dict:
    """Python's random for the seed, as the vectors' rng.json describes the draws."""
    r, g, b, s, c = (random.Random(seed) for _ in range(5))
    shuffled = list(range(spec["shuffle"]["n"]))
    s.shuffle(shuffled)
    weights = spec["choices"]["weights"]
    count = len(spec["random"])
    return {"rng.random": [r.random() for _ in range(count)],
            "rng.gauss": [g.gauss(spec["gauss"]["mu"], spec["gauss"]["sigma"]) for _ in range(count)],
            "rng.getrandbits": [b.getrandbits(spec["getrandbits"]["k"]) for _ in range(count)],
            "rng.shuffle": shuffled,
            "rng.choices": [c.choices(range(len(weights)), weights=weights)[0] for _ in spec["choices"]["values"]]}


def stress(g: dict, init: dict, factor: float) -> dict:
    """The file's own gpt() and softmax() on the initial weights `init` with lm_head times `factor`, on the
    first document, in IEEE arithmetic (exp overflows to inf instead of raising)."""
    Value, exp = g["Value"], math.exp

    def ieee_exp(x):
        try:
            return exp(x)
        except OverflowError:
            return math.inf

    uchars, bos = g["uchars"], len(g["uchars"])
    tokens = ([bos] + [uchars.index(c) for c in g["docs"][0]] + [bos])[:g["block_size"] + 1]
    state_dict = {name: [[Value(x * (factor if name == "lm_head" else 1.0)) for x in row] for row in mat]
                  for name, mat in init.items()}
    keys, values = [[] for _ in range(g["n_layer"])], [[] for _ in range(g["n_layer"])]
    logits, probs = [], []
    math.exp = ieee_exp
    try:
        for pos in range(len(tokens) - 1):
            out = g["gpt"](tokens[pos], pos, keys, values, state_dict, g["n_layer"], g["n_head"])
            logits.append([x.data for x in out])
            probs.append([p.data for p in g["softmax"](out)])
    finally:
        math.exp = exp
    return {"forward.stress.logits": logits, "forward.stress.probs": probs}


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(*sys.argv[1:])
