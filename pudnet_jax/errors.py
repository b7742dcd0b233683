"""User-facing errors: a mistake in the input (config, flags, folders, workdir), not a bug.

`main.py` prints a `UserError` as one line (`error: <message>`) and exits with status 2;
`--debug` shows the traceback. It subclasses ValueError, so code (and tests) that expect a
ValueError from a bad input keep working.
"""


class UserError(ValueError):
    """A bad input, with a message that names the field, file or value and what to do."""
