"""The one exception type for mistakes a user can fix (config, data, command line)."""
import sys


class UserError(Exception):
    """A user-facing error: the runner prints its message on one line and exits non-zero."""


def report(exc):
    """Print ``exc`` as the commands' one ``error:`` line on stderr; return their exit code, 2."""
    print(f"error: {exc}", file=sys.stderr)
    return 2
