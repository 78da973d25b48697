"""How scripts/test.sh spreads the tests over pytest-xdist's workers (`pytest -n auto`, one per core).

Each test is a unit of work of its own, sent to whichever worker is free, except the files of SAME_WORKER:
the tests of one group share a costly module or session fixture, so one worker runs them all and makes
it once. Those groups, then the other tests marked slow, go first: the long work starts early and the
workers end on short tests, not one of them alone on a long one.

(pytest-xdist's `--dist loadgroup` with its xdist_group mark would group tests too, but from pytest 9.2
on it silently distributes them as if unmarked: pytest-xdist issue #1386.)
"""

SAME_WORKER = {
    "tests/test_reference.py": "reference",     # names_runs: atomic.py and the scalar engine, 1000 steps each
    "tests/test_conform.py": "block8_vectors",  # the session's block8 vectors, which test_conform adds
    "tests/test_vectors.py": "block8_vectors",  # configs into, and atomic.py's dump of block8
    "tests/test_web.py": "web",                 # one server, one browser, one reference run in the page
}


def group_of(nodeid: str) -> str | None:
    return SAME_WORKER.get(nodeid.split("::")[0])


def order(items) -> None:
    """Sort a worker's collected items in place: the groups' tests, then the other slow ones, then the rest
    (stable: the files' order within each). Every worker sorts the same collection the same way."""
    items.sort(key=lambda item: (group_of(item.nodeid) is None, item.get_closest_marker("slow") is None))


def make_scheduler(config, log):
    """pytest-xdist's LoadScopeScheduling with one scope per group and one per test elsewhere, handed out
    in the collection's order (order() above)."""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid) or nodeid

    config.option.loadscopereorder = False  # else the scopes with the most tests would go first
    return Scheduler(config, log)
