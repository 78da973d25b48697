"""`microgpt train --config FILE.toml`: train's flags from a TOML file, checked as the command line's are.

    # run.toml: keys are train's flags without the dashes, at the top or under their --help group
    preset = "names"
    [model]
    n_layer = 2
    [optimization]
    steps = 500
    lr_schedule = "cosine"

    microgpt train --config run.toml --steps 100     # an explicit flag overrides the file

Each key becomes the flag it names, placed before the command line's own flags: argparse then checks
types and choices as usual, and the explicit flag, coming later, wins. An unknown key or table, or a
value of the wrong kind, is a UsageError naming the file and the key.
"""

from microgpt.data import read_regular, size_words
from microgpt.errors import UsageError

MAX_CONFIG_BYTES = 2**20  # a config is a few hundred bytes: a bigger file is not one (/dev/zero, a data file)

KINDS = {int: "an integer", float: "a number", None: "a string"}  # an action's type -> what TOML must give


def _fits(value, kind) -> bool:
    if isinstance(value, bool):  # TOML's true/false are bools, never numbers
        return False
    return isinstance(value, {int: int, float: (int, float), None: str}[kind])


def read_toml(path: str) -> dict:
    """The TOML file's table: a regular file (a FIFO or device is refused, as --data's are) of at most
    MAX_CONFIG_BYTES."""
    try:
        import tomllib  # Python 3.11 and later; the rest of microgpt runs on 3.10 too
    except ImportError:
        raise UsageError("--config needs Python 3.11 or later (tomllib); give the flags on the command line") from None

    def too_big(size: int) -> str:
        return (f"--config {path} is {size_words(size)}, over the {size_words(MAX_CONFIG_BYTES)} a config file may "
                f"have; a config holds train's flags, a few lines (is it the right file?)")
    raw = read_regular(path, "--config", "config file", "a TOML file of train's flags", MAX_CONFIG_BYTES, too_big)
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path} is not valid TOML: {e}") from None


def config_argv(path: str, parser) -> list[str]:
    """The flags FILE sets, as command-line words for `parser` (train's)."""
    # argparse keeps each group's actions in _group_actions; the groups are --help's sections
    groups = {group.title: group._group_actions for group in parser._action_groups}
    groups.pop("positional arguments", None)  # train has none
    top = [a for name in ("options", "optional arguments") for a in groups.pop(name, [])]  # ungrouped flags
    every = top + [a for actions in groups.values() for a in actions]
    words, given = [], {}   # flag -> where the file gave it
    for key, value in read_toml(path).items():
        if isinstance(value, dict):  # a table: one of --help's groups
            if key not in groups:
                raise UsageError(f"--config {path}: unknown table [{key}]; the tables are "
                                 f"{', '.join(f'[{g}]' for g in groups)}, or put the keys at the top")
            words += _words(path, f"[{key}] ", value, groups[key], every, given)
        else:
            words += _words(path, "", {key: value}, every, every, given)
    return words


def _by_key(actions) -> dict:
    """key -> action: each flag's name without the dashes, '-' as '_' (--n-layer: n_layer)."""
    return {a.option_strings[-1].lstrip("-").replace("-", "_"): a for a in actions
            if a.option_strings and a.dest not in ("help", "config")}


def _words(path: str, where: str, table: dict, actions, every, given: dict) -> list[str]:
    """The words for a table's keys; `given` (flag -> where) collects the flags set so far, and a flag set
    twice (at the top and in its table, or as n-layer and n_layer) is an error, not the later one silently."""
    by_key = _by_key(actions)
    words = []
    for key, value in table.items():
        action = by_key.get(key.replace("-", "_"))
        if action is None:
            elsewhere = " (a flag of another group)" if key.replace("-", "_") in _by_key(every) else ""
            raise UsageError(f"--config {path}: unknown key {where}{key}{elsewhere}; the keys are train's flags "
                             f"without the dashes, under their --help group or at the top, e.g. n_layer = 4")
        flag = action.option_strings[-1]
        if flag in given:
            raise UsageError(f"--config {path}: {where}{key} sets {flag} again (also {given[flag]}); keep one of them")
        given[flag] = f"{where}{key}" if where else f"top-level {key}"
        if action.nargs == 0:  # a switch: true turns it on
            if not isinstance(value, bool):
                raise UsageError(f"--config {path}: {where}{key} must be true or false (got {value!r})")
            words += [flag] if value else []
        elif action.choices and value not in action.choices:
            raise UsageError(f"--config {path}: {where}{key} must be one of {', '.join(map(str, action.choices))} "
                             f"(got {value!r})")
        elif _fits(value, action.type):
            words += [flag, str(value)]
        else:
            raise UsageError(f"--config {path}: {where}{key} must be {KINDS[action.type]} (got {value!r})")
    return words
