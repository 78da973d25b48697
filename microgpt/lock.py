"""One training run per output directory: DIR/.lock, held for the life of the run.

    with RunLock(out_dir):      # UsageError "DIR is in use by another training run (pid N)" if taken
        ...train...

On POSIX the lock is `fcntl.flock` on DIR/.lock, with the owner's pid written in the file for the
message. The kernel drops it when the process ends, however it ends, so the lock of a killed run
never blocks the next one; the file itself stays (deleting it would race with a process opening it).
Where there is no fcntl (Windows), the lock is the file itself, created exclusively with the owner's
pid and removed on exit; a file whose pid is no longer running is stale and taken over.

Only training takes the lock: `sample`, `report` and `trace` read a directory that is being trained
(every file it holds is replaced atomically, see durable.py).
"""

import os

from microgpt.errors import UsageError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, out_dir: str):
        self.out_dir, self.path, self.fd = out_dir, os.path.join(out_dir, LOCK_NAME), None
        self.made = []  # the directories this lock made: out_dir, then the missing folders above it

    def __enter__(self):
        try:
            self.made = missing_folders(self.out_dir)
            os.makedirs(self.out_dir, exist_ok=True)
            (self._flock if fcntl is not None else self._exclusive_create)()
        except OSError as e:
            raise UsageError(f"cannot use {self.out_dir} for a run ({e.strerror}); choose another --out") from None
        return self

    def __exit__(self, *exc):
        if self.fd is None:
            return
        unused = bool(self.made) and os.listdir(self.out_dir) == [LOCK_NAME]  # the run failed before writing
        os.close(self.fd)  # closing releases the flock
        self.fd = None
        try:
            if fcntl is None or unused:
                os.remove(self.path)
            if unused:
                for folder in self.made:  # leave no trace of a run that never started
                    os.rmdir(folder)  # (fails, and stops, at a folder that something else wrote meanwhile)
        except OSError:  # another run took the directory meanwhile
            pass

    def _in_use(self, pid) -> UsageError:
        return UsageError(f"{self.out_dir} is in use by another training run (pid {pid or 'unknown'})")

    def _flock(self) -> None:
        try:   # never through a symbolic link: the pid written below would land in whatever file it names
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as e:
            if os.path.islink(self.path):
                raise UsageError(f"{self.path} is a symbolic link, not a run's lock; remove it") from None
            raise UsageError(f"cannot take the lock {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise self._in_use(read_pid(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def _exclusive_create(self) -> None:
        for _ in range(2):  # a second try after removing a stale lock
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                pid = read_pid(self.path)
                if pid is not None and is_running(pid):
                    raise self._in_use(pid) from None
                os.remove(self.path)  # its owner is gone (or it never got to write its pid)
                continue
            os.write(self.fd, f"{os.getpid()}\n".encode())
            return
        raise self._in_use(read_pid(self.path))


def missing_folders(path: str) -> list[str]:
    """path and the folders above it that do not exist (absolute), deepest first: what makedirs would make."""
    missing, folder = [], os.path.abspath(path)
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def read_pid(path: str) -> int | None:
    """The pid written in a lock file, or None (empty, unreadable, or removed meanwhile)."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def is_running(pid: int) -> bool:
    """Whether a process with this pid exists."""
    if os.name == "nt":  # os.kill would terminate it there: ask for its exit code instead
        import ctypes
        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
