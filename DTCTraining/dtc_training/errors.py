"""Errors about the user's input. Each message names the file (or option) and the problem."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input found before any work starts; the CLI prints it and exits with EXIT_BAD_INPUT."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n  ".join(self.problems) if len(self.problems) == 1 else
                         f"{len(self.problems)} problems:\n  " + "\n  ".join(self.problems))
