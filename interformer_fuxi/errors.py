"""The one exception type for mistakes a user can fix (config, data, command line), and its
"did you mean" helper."""
import difflib
import sys


class UserError(Exception):
    """A user-facing error: the runner prints its message on one line and exits non-zero."""


def report(exc):
    """Print ``exc`` as the commands' one ``error:`` line on stderr; return their exit code, 2."""
    print(f"error: {exc}", file=sys.stderr)
    return 2


def suggest(word, candidates):
    """``"; did you mean 'x'?"`` for the closest candidate (case-insensitive), else ``""``."""
    by_lower = {str(c).lower(): c for c in candidates}
    match = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean {by_lower[match[0]]!r}?" if match else ""
