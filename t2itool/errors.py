"""The one exception type that means "the user's input is wrong".

The CLI turns a `T2IError` into a single `error: ...` line and a non-zero exit, without a traceback.
Messages name the file or flag at fault and say what to do.
"""


class T2IError(Exception):
    """A user-facing error: bad input, a missing file, a mismatch between stages."""
