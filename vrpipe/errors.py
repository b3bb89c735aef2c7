"""The one error root of the host side: every failure an operator can meet is a VrpipeError with a
message (what is wrong) and a hint (what to do). Entry points print it as one line; tracebacks are for
--debug and for bugs.
"""


class VrpipeError(Exception):
    """A failure the operator can act on: `message` says what is wrong, `hint` what to do about it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint

    def __str__(self) -> str:
        return self.message


class CommandError(VrpipeError):
    """A program exited non-zero, timed out, or is not installed."""

    def __init__(self, argv: list[str], returncode: int | str, output: str, hint: str = ""):
        self.argv, self.returncode, self.output = argv, returncode, output
        outcome = "timed out" if returncode == "timeout" else f"exited with {returncode}"
        super().__init__(f"{' '.join(argv)} {outcome}:\n{output or '(no output)'}", hint)


class SettingsError(VrpipeError, ValueError):
    """A setting or argument is wrong; the message names it and says what is wrong with it."""


def shown(value: object, limit: int = 60) -> str:
    """`value` quoted for a message, control characters escaped, clipped when long: a hostile or mistaken
    input of megabytes must not become a megabyte of error."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(str(value))} characters)"
