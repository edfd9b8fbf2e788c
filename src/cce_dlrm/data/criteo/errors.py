"""The one exception type for bad raw input, worded as ``file:line: field X: problem``."""

from __future__ import annotations


class CriteoInputError(ValueError):
    """A raw Criteo file cannot be used as it is (strict mode stops at the first such row).

    ``line`` is 1-based (as editors show it) or None for a problem of the whole file;
    ``field`` is a Criteo column name (``label``, ``I1``.., ``C1``..) or None for the row.
    """

    def __init__(self, file: str, line: int | None, problem: str, field: str | None = None):
        self.file, self.line, self.problem, self.field = file, line, problem, field
        where = file if line is None else f"{file}:{line}"
        what = problem if field is None else f"field {field}: {problem}"
        super().__init__(f"{where}: {what}")

    def __reduce__(self):  # raised in a worker process, re-raised in the parent
        return type(self), (self.file, self.line, self.problem, self.field)


def show_value(raw: bytes, limit: int = 40) -> str:
    """A raw field for an error message: quoted, shortened, undecodable bytes escaped."""
    text = raw[:limit].decode("utf-8", errors="backslashreplace")
    return repr(text) + ("..." if len(raw) > limit else "")
