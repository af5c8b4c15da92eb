"""The base of every error the CLI reports as a message rather than a traceback."""


class ClinassistError(RuntimeError):
    """A problem the user can fix: missing data, a bad bundle, a failed check."""
