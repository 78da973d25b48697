"""`microgpt conform`: check a port of microgpt against the conformance vectors and name its first divergence.

    microgpt conform -- ./microgpt                      run the port as the original program runs: in a
                                                        fresh temporary folder whose input.txt holds the
                                                        embedded names, default config; its printed output
                                                        is compared line by line as it streams, and the port
                                                        is stopped at the first line that differs
    microgpt conform --data FILE -- python port.py      the same with FILE as input.txt
    microgpt conform --dump port_dump.json              a port's own dump of the stages (README, "Porting
                                                        microgpt"), JSON or safetensors
    ... --vectors DIR    the vectors to compare with (default: generated once into the cache,
                         $MICROGPT_CACHE or ~/.cache/microgpt); --json: the report as JSON

Each stage (rng, tokenizer, init, forward, gradients, adam, losses, samples) is reported as pass or
FAIL with the tolerance it uses; the first divergence is named (stage, tensor or step, index, expected,
got), with a likely cause when a known variant (tools/variants.py, simulated) reproduces the port's
numbers. Exit status 0 when every checked stage passes, 1 otherwise.
"""

import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from microgpt.checkpoint import read_safetensors
from microgpt.data import EMBEDDED_NAMES, read_data_file, read_text
from microgpt.errors import UsageError
from microgpt.tools import vectors as vec
from microgpt.tools.variants import Simulation, for_stage

STAGES = ("rng", "tokenizer", "init", "forward", "gradients", "adam", "losses", "samples")
# stage -> (absolute, relative) tolerance: |got - want| <= atol + rtol * |want|
TOLERANCE = {"rng": (0.0, 1e-15), "tokenizer": (0.0, 0.0), "init": (0.0, 1e-15), "forward": (1e-12, 1e-9),
             "gradients": (1e-12, 1e-9), "adam": (1e-12, 1e-9), "losses": (0.0, 1e-9), "samples": (0.0, 0.0)}
PRINTED = "printed to 4 decimals: equal, or a correct rounding of a value within 1e-9 (relative) of the reference"
GUESS_STEPS = 12  # losses: variants are simulated when the divergence is within this many steps


def tolerance_text(stage: str) -> str:
    atol, rtol = TOLERANCE[stage]
    if atol == rtol == 0.0:
        return "exact"
    return f"|got - want| <= {atol:g} + {rtol:g}*|want|" if atol else f"|got - want| <= {rtol:g}*|want|"


def close(got: float, want: float, stage: str) -> bool:
    atol, rtol = TOLERANCE[stage]
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if math.isinf(want) or math.isinf(got):
        return got == want
    return abs(got - want) <= atol + rtol * abs(want)


def unravel(i: int, shape) -> list[int]:
    out = []
    for d in reversed(shape or [1]):
        out.append(i % d)
        i //= d
    return out[::-1] if shape else []


class Report:
    """Stage results and the first divergence, printed as text or JSON."""

    def __init__(self, mode: str, config: str, where: str):
        self.mode, self.config, self.where = mode, config, where
        self.stages = {s: {"stage": s, "status": "not checked", "checked": "", "tolerance": tolerance_text(s)}
                       for s in STAGES}
        self.first = None      # {"stage", "what", "index", "expected", "got"}
        self.cause = None
        self.notes = []

    def passed(self, stage: str, checked: str, tolerance: str | None = None) -> None:
        self.stages[stage].update(status="pass", checked=checked, **({"tolerance": tolerance} if tolerance else {}))

    def failed(self, stage: str, what: str, index, expected, got, checked: str = "", tolerance=None) -> None:
        self.stages[stage].update(status="FAIL", checked=checked, **({"tolerance": tolerance} if tolerance else {}))
        divergence = {"stage": stage, "what": what, "index": index, "expected": expected, "got": got}
        if self.first is None or STAGES.index(stage) < STAGES.index(self.first["stage"]):
            self.first = divergence

    @property
    def ok(self) -> bool:
        return self.first is None and any(s["status"] == "pass" for s in self.stages.values())

    def to_json(self) -> dict:
        return {"mode": self.mode, "config": self.config, "where": self.where, "ok": self.ok,
                "stages": list(self.stages.values()), "first_divergence": self.first, "likely_cause": self.cause,
                "notes": self.notes}

    def print(self, out=sys.stdout) -> None:
        print(f"microgpt conform: {self.where} (vectors: config '{self.config}')", file=out)
        for s in self.stages.values():
            print(f"  {s['stage']:<10} {s['status']:<12} {s['checked']:<34} {s['tolerance']}", file=out)
        if self.first:
            f = self.first
            index = f" index {f['index']}:" if f["index"] not in (None, "") else ""
            print(f"first divergence: {f['stage']}, {f['what']},{index} expected {fmt(f['expected'])}, "
                  f"got {fmt(f['got'])}", file=out)
            print(f"likely cause: {self.cause or 'none of the known variants (SPEC.md section 15) reproduces it'}",
                  file=out)
        for note in self.notes:
            print(f"note: {note}", file=out)
        print(f"result: {'PASS' if self.ok else 'FAIL'}", file=out)


def fmt(x) -> str:
    return repr(x) if isinstance(x, (float, str)) else json.dumps(x, ensure_ascii=False)


# ---- streaming: run the port as the original program ---------------------------------------------
def stage_of_line(i: int, num_steps: int) -> str:
    return "tokenizer" if i < 2 else "init" if i == 2 else "losses" if i < 3 + num_steps else "samples"


STEP_LINE = re.compile(r"step\s+(\d+) / +(\d+) \| loss (\S+)$")


def same_line(got: str, want: str, loss: float | None) -> bool:
    """Equal, or for a step line, a 4-decimal rounding of a value within 1e-9 of the reference's loss."""
    if got == want:
        return True
    m, w = STEP_LINE.match(got), STEP_LINE.match(want)
    if not (m and w and loss is not None and m.groups()[:2] == w.groups()[:2]):
        return False
    try:
        printed = float(m.group(3))
    except ValueError:
        return False
    return len(m.group(3).split(".")[-1]) == 4 and abs(printed - loss) <= 0.00005 + 1e-9 * abs(loss)


def stream(cmd: list[str], data_path: str | None, vdir: str, timeout: float, log) -> Report:
    if shutil.which(cmd[0]) is None:  # before any vectors are written
        raise UsageError(f"cannot run {cmd[0]!r}: not found or not executable; give the port's command after --, "
                         f"e.g. microgpt conform -- ./microgpt")
    config = "default" if data_path is None else f"data-{read_data_file(data_path)[1][:12]}"
    spec = None if data_path is None else ({}, 42, 1000, os.path.abspath(data_path))
    v = vec.ensure(vdir, config, spec, log)
    printed, losses = v["losses"]["printed"], v["losses"]["losses"]
    n_steps = len(losses)
    source = data_path or EMBEDDED_NAMES
    report = Report("stream", config, f"`{' '.join(cmd)}` on {data_path or 'the embedded names'}")
    got_lines, divergence = [], None
    with tempfile.TemporaryDirectory(prefix="microgpt-conform-") as work:
        shutil.copyfile(source, os.path.join(work, "input.txt"))
        stderr = open(os.path.join(work, ".stderr"), "w+b")
        try:
            proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise UsageError(f"cannot run {cmd[0]!r}: {e.strerror}; give the port's command after --, "
                             f"e.g. microgpt conform -- ./microgpt") from None
        lines = queue.Queue()
        threading.Thread(target=lambda: ([lines.put(l) for l in proc.stdout], lines.put(None)), daemon=True).start()
        deadline = time.monotonic() + timeout
        try:
            for i, want in enumerate(printed + [None]):
                try:
                    raw = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    divergence = (i, "timeout", None)
                    break
                if raw is None:
                    if want is not None:
                        divergence = (i, "ended", None)
                    break
                got = raw.decode("utf-8", "replace").rstrip("\r\n")
                if want is None:
                    divergence = (i, "extra", got)
                    break
                got_lines.append(got)
                loss = losses[i - 3] if 3 <= i < 3 + n_steps else None
                if not same_line(got, want, loss):
                    divergence = (i, "differs", got)
                    break
        finally:
            if proc.poll() is None and divergence is not None:
                proc.kill()  # the first divergence is all we need: do not wait out the port's run
            try:
                status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                status = proc.wait()
            stderr.seek(0)
            err = stderr.read().decode("utf-8", "replace").strip().splitlines()
            stderr.close()
    if divergence is None and status != 0:
        divergence = (len(printed), "status", status)
    _stream_report(report, printed, losses, got_lines, divergence, err)
    if report.first and report.first["stage"] in ("init", "losses", "samples"):
        report.cause = guess_stream(report.first["stage"], got_lines, v, config, spec)
    return report


def _stream_report(report, printed, losses, got_lines, divergence, err) -> None:
    n_steps = len(losses)
    spans = {"tokenizer": (0, 2, "num docs, vocab size"), "init": (2, 3, "num params"),
             "losses": (3, 3 + n_steps, f"{n_steps} steps"), "samples": (3 + n_steps, len(printed), "20 samples")}
    at = divergence[0] if divergence else len(printed)
    for stage, (lo, hi, what) in spans.items():
        tol = PRINTED if stage == "losses" else "exact"
        if at >= hi:
            report.passed(stage, what, tol)
        elif at < lo:
            report.stages[stage].update(status="not reached", checked=what, tolerance=tol)
        else:
            i, kind, got = divergence
            want = printed[i] if i < len(printed) else "(end of output)"
            label = {"tokenizer": "header line", "init": "header line", "losses": f"step {i - 2}",
                     "samples": "samples header" if i == 3 + n_steps else f"sample {i - 3 - n_steps}"}[stage]
            shown = {"differs": got, "extra": got, "ended": "(end of output)",
                     "timeout": "(nothing: timed out)", "status": f"exit status {got}"}[kind]
            report.failed(stage, f"line {i + 1} ({label})", None, want, shown, what, tol)
            if stage == "losses" and kind == "differs" and STEP_LINE.match(got or ""):
                report.first.update(expected_value=losses[i - 3])
    for stage in ("rng", "forward", "gradients", "adam"):
        report.stages[stage].update(checked="not in the printed output (--dump)", tolerance="")
    if divergence and err:
        report.notes.append("the port's stderr ended with: " + " | ".join(err[-3:]))


def _printed_losses(lines: list[str]) -> list[str]:
    return [m.group(3) for m in map(STEP_LINE.match, lines[3:]) if m]


def guess_stream(stage: str, got_lines: list[str], v: dict, config: str, spec) -> str | None:
    model, seed, steps, data = spec or vec.CONFIGS[config]
    data_path = os.path.join(v["folder"], "input.txt") if data is not None else None
    make = lambda variant: Simulation(model, seed, steps, data_path, variant)
    if stage == "init":  # the num params line
        got = got_lines[2].removeprefix("num params: ")
        for variant in for_stage("init"):
            if str(make(variant).num_params) == got:
                return variant.cause
        return None
    if stage == "losses":
        printed = _printed_losses(got_lines)
        if not printed or len(printed) > GUESS_STEPS:
            return None
        for variant in for_stage("losses"):
            if [f"{x:.4f}" for x in make(variant).losses(len(printed))] == printed:
                return variant.cause
        return None
    got = [line.split(": ", 1)[1] if ": " in line else "" for line in got_lines if line.startswith("sample ")]
    for variant in for_stage("samples"):
        if got and make(variant).samples(v["final"], len(got)) == got:
            return variant.cause
    return None


# ---- a port's dump --------------------------------------------------------------------------------
def load_dump(path: str) -> dict:
    """name -> value: numbers as (flat floats, shape), `tokens` as lists, `samples` as strings, `config`."""
    if not os.path.isfile(path):
        raise UsageError(f"--dump {path}: no such file; write the port's dump first (README, 'Porting microgpt')")
    with open(path, "rb") as f:
        head = f.read(9)
    out = {}
    if head[8:9] != b"{":  # not safetensors (8 bytes of header length, then the JSON header): JSON
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise UsageError(f"--dump {path} is not valid JSON ({e}); see README, 'Porting microgpt'") from None
        try:
            out = json_entries(path, raw)
        except RecursionError:
            raise UsageError(f"--dump {path} nests its lists too deeply for any tensor; see README, "
                             f"'Porting microgpt'") from None
    else:
        try:
            tensors, meta = read_safetensors(path)
        except UsageError:
            raise UsageError(f"--dump {path} is neither JSON nor safetensors; see README, 'Porting microgpt'") from None
        for name, t in tensors.items():
            out[name] = (t.to_floats(), list(t.shape))
        out["config"] = meta.get("config", "default")
        if "samples" in meta:
            try:
                out["samples"] = json.loads(meta["samples"])
            except ValueError:
                out["samples"] = meta["samples"]  # a string: the check below names it
            check_entry(path, "samples", out["samples"])
        if "tokens" in out:  # the sequences concatenated: [BOS ... BOS][BOS ... BOS]...
            flat, seqs = [int(x) for x in out["tokens"][0]], []
            bos = flat[0] if flat else None
            for tok in flat:
                if not seqs or (seqs[-1][-1] == bos and len(seqs[-1]) > 1):
                    seqs.append([])
                seqs[-1].append(tok)
            out["tokens"] = seqs
    return out


def json_entries(path: str, raw) -> dict:
    """A JSON dump's entries as load_dump returns them, each checked against README's table ('Porting
    microgpt'): the first that is not as it says is a one-line error naming the entry and what it must be."""
    if not isinstance(raw, dict):
        raise UsageError(f"--dump {path} holds a JSON {type(raw).__name__}; a dump is a JSON object of named "
                         f"entries (README, 'Porting microgpt')")
    out = {}
    for name, value in raw.items():
        check_entry(path, name, value)
        out[name] = value if name in ("config", "samples", "tokens") else (_flat_json(value), _shape(value))
    return out


def check_entry(path: str, name: str, value) -> None:
    """A one-line error unless entry `name` of the dump is what README's table says it is."""
    expected, wrong = _entry_problem(name, value)
    if wrong:
        raise UsageError(f"--dump {path}: {name!r} must be {expected}, not {wrong}; see README, 'Porting microgpt'")


def _entry_problem(name: str, value) -> tuple[str, str | None]:
    """What entry `name` of a dump must be, and what is wrong with `value` (None: nothing)."""
    if name == "config":
        return f"a config name ({', '.join(vec.CONFIGS)})", None if isinstance(value, str) else _kind(value)
    if name == "samples":
        return "a list of strings", _wrong_item(value, lambda x: isinstance(x, str))
    if name == "tokens":
        is_id = lambda t: isinstance(t, int) and not isinstance(t, bool)
        return "a list of documents, each a list of token ids [BOS, ids..., BOS]", (
            _wrong_item(value, lambda seq: isinstance(seq, list)) or
            next((f"a document holding {_kind(t)}" for seq in value for t in seq if not is_id(t)), None))
    return "a number or non-empty lists of numbers nested as its shape", _numbers_problem(value)


def _wrong_item(value, ok) -> str | None:
    """None when `value` is a list whose every item is ok, else what it is or holds instead."""
    if not isinstance(value, list):
        return _kind(value)
    return next((f"a list holding {_kind(x)}" for x in value if not ok(x)), None)


def _shape(value) -> list[int] | None:
    """The shape of a number (null for NaN) or of non-empty lists of them with rows of equal shape; None
    for anything else."""
    if not isinstance(value, list):
        return [] if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)) else None
    shapes = [_shape(v) for v in value]
    if not shapes or shapes[0] is None or any(s != shapes[0] for s in shapes):
        return None
    return [len(value)] + shapes[0]


def _numbers_problem(value) -> str | None:
    """None when `value` has a shape (_shape), else what is wrong: 'a string', 'a list holding an object'..."""
    if _shape(value) is not None:
        return None
    if not isinstance(value, list) or not value:
        return _kind(value)
    inner = next((p for v in value if (p := _numbers_problem(v))), None)
    return f"a list holding {inner}" if inner else "lists of unequal shapes"


def _kind(value) -> str:
    """What a JSON value is, for an error message: 'a string', 'an empty list', 'the number 3'..."""
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return {dict: "an object", str: "a string", bool: "true or false", type(None): "null"}.get(
        type(value), f"the number {value!r}")


def _flat_json(value) -> list[float]:
    if isinstance(value, list):
        return [x for v in value for x in _flat_json(v)]
    return [math.nan if value is None else float(value)]


def expected_entries(v: dict) -> list[tuple[str, str, list[float], list[int]]]:
    """(stage, dump name, expected flat values, shape) for every numeric entry, in the order checked."""
    floats = lambda t: (t.to_floats(), list(t.shape))
    rng, tok, cfg = v["rng"], v["tokens"], v["config"]
    out = [("rng", "rng.random", rng["random"], [len(rng["random"])])]
    for key in ("gauss", "getrandbits", "shuffle", "choices"):
        values = [float(x) for x in rng[key]["values"]]
        out.append(("rng", f"rng.{key}", values, [len(values)]))
    out += [("tokenizer", "num_docs", [float(tok["num_docs"])], []), ("tokenizer", "vocab_size", [float(tok["vocab_size"])], []),
            ("init", "num_params", [float(cfg["num_params"])], [])]
    out += [("init", f"init.{n}", *floats(t)) for n, t in v["init"].items()]
    out += [("forward", f"forward.{n}", *floats(t)) for n, t in v["forward"].items()]
    out += [("gradients", f"grad.{n}", *floats(t)) for n, t in v["grads"].items()]
    for which in ("m", "v", "param"):
        out += [("adam", f"adam.{n}", *floats(t)) for n, t in v["adam"].items() if n.startswith(which + ".")]
    return out


def check_dump(path: str, vdir: str, log) -> Report:
    got = load_dump(path)
    config = got.get("config", "default")
    if config not in vec.CONFIGS:
        raise UsageError(f"--dump {path} names config {config!r}; the vectors have: {', '.join(vec.CONFIGS)}")
    v = vec.ensure(vdir, config, None, log)
    report = Report("dump", config, f"dump {path}")
    known = {"config", "tokens", "losses", "samples"}
    counts = {s: 0 for s in STAGES}
    for stage, name, want, shape in expected_entries(v):
        known.add(name)
        if name not in got:
            continue
        values, got_shape = got[name]
        counts[stage] += 1
        if report.stages[stage]["status"] == "FAIL":
            continue
        if len(values) != len(want):
            report.failed(stage, f"tensor {name}", "shape", shape, got_shape)
            continue
        for i, (g, w) in enumerate(zip(values, want)):
            if not close(g, w, stage):
                report.failed(stage, f"tensor {name}", unravel(i, shape), w, g)
                break
    if "tokens" in got:
        counts["tokenizer"] += 1
        for d, (g, w) in enumerate(zip(got["tokens"], v["tokens"]["tokens"])):
            if report.stages["tokenizer"]["status"] != "FAIL" and g != w:
                report.failed("tokenizer", f"tokens of document {d} ({v['tokens']['docs'][d]!r})", None, w, g)
    if "losses" in got:
        values, want = got["losses"][0], v["losses"]["losses"]
        counts["losses"] = len(values)
        for i, (g, w) in enumerate(zip(values, want)):
            if not close(g, w, "losses"):
                report.failed("losses", f"step {i + 1}", [i], w, g)
                break
        if len(values) > len(want):
            report.failed("losses", "the number of steps", None, len(want), len(values))
    if "samples" in got:
        counts["samples"] = len(got["samples"])
        for i, (g, w) in enumerate(zip(got["samples"], v["samples"]["samples"])):
            if g != w:
                report.failed("samples", f"sample {i + 1}", None, w, g)
                break
    for stage, n in counts.items():
        st = report.stages[stage]
        st["checked"] = f"{n} {'entries' if stage not in ('losses', 'samples') else stage}" if n else "not in the dump"
        if n and st["status"] != "FAIL":
            st["status"] = "pass"
    unknown = sorted(set(got) - known)
    if unknown:
        report.notes.append(f"{len(unknown)} names are not in the vectors and were ignored: {', '.join(unknown[:5])}")
    if not any(counts.values()):
        raise UsageError(f"--dump {path} has none of the vectors' names; see README, 'Porting microgpt'")
    if report.first:
        report.cause = guess_dump(report.first["stage"], got, v, config)
    return report


def _matches(stage: str, got: dict, simulated: dict) -> bool:
    """The port's entries that the simulation also has agree with it (and there is at least one)."""
    common = [n for n in simulated if n in got]
    return bool(common) and all(len(got[n][0]) == len(simulated[n]) and
                                all(close(g, w, stage) for g, w in zip(got[n][0], simulated[n])) for n in common)


def guess_dump(stage: str, got: dict, v: dict, config: str) -> str | None:
    model, seed, steps, data = vec.CONFIGS[config]
    data_path = os.path.join(v["folder"], "input.txt") if data is not None else None
    cfg = v["config"]
    for variant in for_stage(stage):
        sim = Simulation(model, seed, steps, data_path, variant)
        if stage == "tokenizer":
            if "tokens" in got and sim.tokens(len(got["tokens"])) == got["tokens"]:
                return variant.cause
        elif stage == "init":
            simulated = {f"init.{n}": t.to_floats() for n, t in sim.run.params.items()}
            if variant.tied_head and "init.lm_head" in got:
                simulated["init.lm_head"] = simulated["init.wte"]
            if _matches("init", got, simulated):
                return variant.cause
        elif stage == "forward":
            tokens = sim.run.encode(cfg["step1_doc"])
            factor = cfg["stress_lm_head_factor"]
            simulated = {"forward.logits": [x for row in sim.logits(tokens) for x in row],
                         "forward.stress.probs": [x for row in sim.logits(tokens, factor) for x in sim.probs(row)]}
            failing = [n for n in simulated if n in got and not _matches("forward", got, {n: v_flat(v, n)})]
            if failing and _matches("forward", got, {n: simulated[n] for n in failing}):
                return variant.cause
        elif stage == "adam":
            simulated = {f"adam.{n}": x for n, x in sim.adam().items()}
            if _matches("adam", got, simulated):
                return variant.cause
        elif stage == "losses":
            values = got["losses"][0][:GUESS_STEPS]
            if _matches("losses", {"losses": (values, [])}, {"losses": sim.losses(len(values))}):
                return variant.cause
        elif stage == "samples":
            if sim.samples(v["final"], len(got["samples"])) == got["samples"]:
                return variant.cause
    if stage == "tokenizer" and "tokens" in got:  # not a known shuffle, but the same documents in another order
        sim = Simulation(model, seed, steps, data_path, for_stage("tokenizer")[0])
        everything = {tuple(t) for t in sim.tokens(len(sim.run.docs))}
        if got["tokens"] != v["tokens"]["tokens"] and all(tuple(t) in everything for t in got["tokens"]):
            return "a different shuffle: the port's documents are the reference's, in another order"
    return None


def v_flat(v: dict, name: str) -> list[float]:
    return v["forward"][name.removeprefix("forward.")].to_floats()


# ---- the command line ------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--data", help="streaming: the file given to the port as input.txt (default: the embedded names)")
    p.add_argument("--dump", help="check this dump of the port's stages (JSON or safetensors) instead of running it")
    p.add_argument("--vectors", help="the vectors' directory (default: generated once into the cache, "
                   "$MICROGPT_CACHE or ~/.cache/microgpt)")
    p.add_argument("--timeout", type=float, default=1800, help="streaming: seconds the port may run (default 1800)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("port", nargs="*", help="streaming: the port's command, after --, e.g. -- ./microgpt")


def run(args) -> int:
    vdir = args.vectors or vec.cache_dir()
    log = lambda msg: print(f"microgpt conform: writing vectors into {vdir}: {msg}", file=sys.stderr, flush=True)
    if args.dump and args.port:
        raise UsageError("give either --dump FILE or the port's command after --, not both")
    if args.dump:
        if args.data:
            raise UsageError("--data is for running a port; a dump names its config itself")
        report = check_dump(args.dump, vdir, log)
    elif args.port:
        if args.data is not None:
            read_text(args.data)  # a clear error for a missing or unreadable file
        if args.timeout <= 0:
            raise UsageError(f"--timeout must be a positive number of seconds (got {args.timeout})")
        report = stream(args.port, args.data, vdir, args.timeout, log)
    else:
        raise UsageError("nothing to check: give the port's command after --, e.g. microgpt conform -- ./microgpt, "
                         "or --dump FILE")
    if args.json:
        json.dump(report.to_json(), sys.stdout, ensure_ascii=False, default=str)
        print()
    else:
        report.print()
    return 0 if report.ok else 1
