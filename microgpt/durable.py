"""Writing a file so that a crash at any instant leaves either the old file or the new one, whole.

    durable.replace_file("out/checkpoint.safetensors", lambda f: f.write(data))
    durable.remove_leftovers("out", "checkpoint.safetensors")   # temp files of a killed writer

The new content goes to a temp file of its own in the same directory (a unique name per write, so
two writers never share one), is flushed and fsynced, renamed over the target (atomic on POSIX and
Windows), and then the directory is fsynced so that the rename itself survives a power cut.

Beside it, what every command checks and says about a path it writes: a symbolic link to nowhere on the
way (refuse_broken_link), something not a file where one goes (not_a_file), a write that failed
(cannot_write, what_to_do).
"""

import errno
import glob
import os
import secrets

from microgpt.errors import UsageError


def temp_name(path: str) -> str:
    """A fresh name beside `path`: PATH.<pid>.<random>.tmp."""
    return f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def replace_file(path: str, write) -> None:
    """Call write(f) on a new binary file and make it `path` durably; on any error `path` is untouched."""
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as f:  # x: create, never reuse an existing file
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")


def cannot_write(flag: str, path: str, e: OSError) -> UsageError:
    """The one-line error for a file the user named (export's --to, trace's --json) that replace_file could not
    write: what happened and what to do; the file is as it was."""
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        why = "a file stands where its path needs a folder; choose a folder you can write to"
    else:
        why = f"{e.strerror or e}; {what_to_do(e)}"
    return UsageError(f"cannot write {flag} {path}: {why} (nothing was replaced)")


def what_to_do(e: OSError) -> str:
    """The fix for a write that failed with e, in words: free some space, or choose another folder."""
    return {errno.ENOSPC: "free some space, or choose another folder",
            errno.ENOENT: "choose a folder that exists"}.get(e.errno, "choose a folder you can write to")


def not_a_file(path: str) -> str | None:
    """What stands at `path` where a command would write a file, in words ("a folder", "not a regular file"),
    or None when nothing does or it is a regular file."""
    if not os.path.lexists(path) or os.path.isfile(path):
        return None
    return "a folder" if os.path.isdir(path) else "not a regular file"


def refuse_broken_link(path: str, flag: str = "--out") -> None:
    """A path flag (--out, --build, --to, --json) that runs into a symbolic link that leads nowhere (a loop, or a
    target since removed), the path itself or a folder on the way to it, is named as such: every later step would
    otherwise blame something else (no checkpoint there; cannot make it: File exists)."""
    at = path
    while at and not os.path.exists(at):
        if os.path.islink(at):
            where = "" if at == path else f": {at}"
            raise UsageError(f"{flag} {path}{where} is a symbolic link that leads nowhere (a loop, or a missing "
                             f"target); remove or mend the link, or choose another {flag}")
        above = os.path.dirname(at.rstrip(os.sep))
        if above == at:
            break
        at = above


def fsync_dir(directory: str) -> None:
    """Make the directory's entries (a rename, a new file) durable. Windows cannot open a directory."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_leftovers(directory: str, name: str) -> list[str]:
    """Delete the temp files that a writer of `name` killed mid-write left behind; returns them.
    Call it only while holding the directory's lock (lock.py): another run's temp file is live."""
    left = glob.glob(os.path.join(glob.escape(directory), glob.escape(name) + ".*.tmp"))
    for path in left:
        os.remove(path)
    return left
