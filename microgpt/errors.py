"""The exceptions the command line turns into a one-line error message (never a traceback)."""


class UsageError(Exception):
    """Bad input from the user: the message names the problem and the fix, in one line."""


class WriteFailed(OSError):
    """A write that failed mid-run (a full disk, a folder removed): its message says what is safe and how to
    go on. An OSError, so that it ends the command as any failed write does (exit status 1)."""
