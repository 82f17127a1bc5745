"""The one exception type for mistakes a user can fix (config, data, command line)."""


class UserError(Exception):
    """A user-facing error: the runner prints its message on one line and exits non-zero."""
