"""A recorder of atomic.py's own execution: every value its functions bind, line by line, with the line.

`microgpt trace` and the browser page's step-through show what atomic.py computes without restating
it: while `gpt()`, `rmsnorm()` and `softmax()` of microgpt/atomic.py run on Value objects, a
`sys.settrace` hook watches their frames. When a statement has run, the recorder takes the values it
bound (its assignment targets, read from the frame's locals) or grew (`keys[li].append(k)`,
`x_attn.extend(head_out)`), together with the statement's line number and source (`linecache`), and
the layer and head loops it sits in. The recorded values are the Value objects themselves, so after
`loss.backward()` each also holds its gradient, d(loss)/d(that intermediate).

    with Recorder() as rec:
        rec.position = pos_id
        logits = gpt(token_id, pos_id, keys, values, state_dict, n_layer, n_head)
    rec.records   # [Record(name, lineno, code, value, layer, head, pos_id)], in execution order
"""

import ast
import inspect
import linecache
import sys
import textwrap
from dataclasses import dataclass

from microgpt import atomic

TRACED = (atomic.gpt, atomic.rmsnorm, atomic.softmax)
GROWERS = ("append", "extend")           # list methods whose receiver the recorder shows after the call
CONTEXT_LOOPS = {"li": "layer", "h": "head"}  # gpt()'s loop variables: which layer, which head


@dataclass
class Record:
    name: str          # atomic.py's variable (for a grown list, the list's name)
    lineno: int        # the line of atomic.py that computed it
    code: str          # that line's source
    value: object      # a Value, a float, or (nested) lists of them, as atomic.py holds them
    layer: int | None = None
    head: int | None = None
    pos_id: int | None = None


@dataclass
class _Statement:
    lineno: int
    names: tuple              # names bound by it
    grown: tuple = ()         # (label, expression) of lists it grows: ("keys", "keys[li]")
    loops: tuple = ()         # enclosing loop variables among CONTEXT_LOOPS
    is_loop_header: bool = False


def _statements(func) -> dict[int, _Statement]:
    """line number -> the statement of `func` that line belongs to (for a loop: its header lines)."""
    lines, first = inspect.getsourcelines(func)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    by_line = {}

    def targets(node):
        return tuple(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))

    def visit(body, loops):
        for node in body:
            lineno = node.lineno + first - 1
            if isinstance(node, ast.For):
                var = targets(node.target)
                inner = loops + tuple(v for v in var if v in CONTEXT_LOOPS)
                stmt = _Statement(lineno, var, loops=inner, is_loop_header=True)
                for ln in range(lineno, node.body[0].lineno + first - 1):
                    by_line[ln] = stmt
                visit(node.body, inner)
                continue
            grown = ()
            call = node.value if isinstance(node, ast.Expr) else None
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in GROWERS:
                receiver = call.func.value
                base = receiver.value if isinstance(receiver, ast.Subscript) else receiver
                grown = ((base.id if isinstance(base, ast.Name) else ast.unparse(receiver), ast.unparse(receiver)),)
            stmt = _Statement(lineno, () if isinstance(node, ast.Return) else targets(node), grown, loops)
            for ln in range(lineno, node.end_lineno + first):
                by_line[ln] = stmt

    visit(tree.body[0].body, ())
    return by_line


def snapshot(value):
    """The value as it is now: lists are copied (atomic.py grows some later); Values are kept, so that
    their grad can be read after backward()."""
    if isinstance(value, list):
        return [snapshot(v) for v in value]
    return value


def is_model_number(value) -> bool:
    """Values and floats, or lists of them: the numbers of the model (not counters or config ints)."""
    if isinstance(value, list):
        return bool(value) and is_model_number(value[0])
    return isinstance(value, (atomic.Value, float))


def source_line(lineno: int) -> str:
    return linecache.getline(atomic.__file__, lineno).strip()


def find_line(text: str) -> int:
    """The line number of atomic.py whose source contains `text` (for the lines of its training loop,
    which the trace drives itself); a KeyError if the file no longer has it."""
    for lineno, line in enumerate(linecache.getlines(atomic.__file__), 1):
        if text in line:
            return lineno
    raise KeyError(f"atomic.py has no line with {text!r}")


class Recorder:
    def __init__(self):
        self.records: list[Record] = []
        self.position: int | None = None
        self._statements = {f.__code__: _statements(f) for f in TRACED}
        self._current = {}  # frame -> the statement running in it

    def __enter__(self):
        self._previous = sys.gettrace()
        sys.settrace(self._on_call)
        return self

    def __exit__(self, *exc):
        sys.settrace(self._previous)

    def add(self, name: str, lineno: int, value, layer=None, head=None) -> None:
        """A record the caller makes itself (a line of atomic.py's training loop that it runs)."""
        self.records.append(Record(name, lineno, source_line(lineno), snapshot(value), layer, head, self.position))

    # ---- the tracing hooks ------------------------------------------------------------------------
    def _on_call(self, frame, event, arg):
        if event == "call" and frame.f_code in self._statements:
            return self._on_event
        return None

    def _on_event(self, frame, event, arg):
        statements = self._statements[frame.f_code]
        running = self._current.get(frame)
        now = statements.get(frame.f_lineno) if event == "line" else None
        if running is not None and now is not running:  # a statement has finished: take what it made
            self._take(frame, running)
        if event == "return":
            self._current.pop(frame, None)
        else:
            self._current[frame] = now
        return self._on_event

    def _context(self, frame):
        """(layer, head) of the statement running in gpt(), for a frame of it or of a function it called."""
        while frame is not None:
            statement = self._current.get(frame)
            if frame.f_code is atomic.gpt.__code__ and statement is not None:
                found = {CONTEXT_LOOPS[v]: frame.f_locals.get(v) for v in statement.loops}
                return found.get("layer"), found.get("head")
            frame = frame.f_back
        return None, None

    def _take(self, frame, statement) -> None:
        if statement.is_loop_header:
            return  # the loop variables are shown as the layer and head of what follows
        local = frame.f_locals
        layer, head = self._context(frame)
        made = [(name, local[name]) for name in statement.names if name in local]
        for label, expression in statement.grown:
            made.append((label, eval(expression, frame.f_globals, dict(local))))  # e.g. keys[li]: no side effects
        for name, value in made:
            if is_model_number(value):
                self.records.append(Record(name, statement.lineno, source_line(statement.lineno), snapshot(value),
                                           layer, head, self.position))
