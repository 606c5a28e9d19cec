"""The one error a user mistake becomes: a single line naming the file, the key and the problem."""

from __future__ import annotations


class GateError(Exception):
    """A user-facing failure of the gate; str() is the whole message, on one line."""

    def __init__(self, where: object, key: str | None, problem: str) -> None:
        self.where, self.key, self.problem = str(where), key, problem
        super().__init__(f"{self.where}: {key}: {problem}" if key else f"{self.where}: {problem}")
