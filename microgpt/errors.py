"""The one exception the command line turns into a one-line error message (never a traceback)."""


class UsageError(Exception):
    """Bad input from the user: the message names the problem and the fix, in one line."""
