"""The one way image/ runs a program: an argv list (never a shell string), logged, checked; a failure
raises CommandFailed naming the command and the end of what it printed.
"""

import logging
import os
import shlex
import subprocess
from collections import deque
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("image")
TAIL_LINES = 25


class CommandFailed(Exception):
    def __init__(self, argv: list[str], returncode: int, output: str):
        self.argv, self.returncode, self.output = argv, returncode, output
        super().__init__(f"`{shlex.join(argv)}` exited with {returncode}:\n{output or '(no output)'}")


def run(
    argv: list[str | Path],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    capture: bool = False,
    echo: bool = False,
    timeout: float | None = None,
) -> str:
    """Run argv with extra env; return its stdout when capture is set, else stream its output to the log
    (at INFO when echo is set, so long tools show their progress; at DEBUG otherwise). A timeout (which
    kills the program) implies capture: a streamed program could hold its output open forever."""
    words = [str(a) for a in argv]
    log.debug("$ %s", shlex.join(words))
    full_env = {**os.environ, **env} if env else None
    try:
        if capture or timeout is not None:
            return _captured(words, full_env, input, timeout)
        _streamed(words, full_env, input, logging.INFO if echo else logging.DEBUG)
        return ""
    except FileNotFoundError as e:
        raise CommandFailed(words, 127, f"{words[0]} is not installed (run ./bootstrap.sh)") from e


def _captured(words, env, input, timeout) -> str:
    done = subprocess.run(words, env=env, input=input, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise CommandFailed(words, done.returncode, (done.stderr or done.stdout).strip()[-4000:])
    return done.stdout


def _streamed(words, env, input, level) -> None:
    tail = deque(maxlen=TAIL_LINES)
    with subprocess.Popen(
        words,
        env=env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        if input is not None:
            proc.stdin.write(input)
            proc.stdin.close()
        for line in proc.stdout:
            tail.append(line.rstrip())
            log.log(level, "  %s", line.rstrip())
        returncode = proc.wait()
    if returncode != 0:
        raise CommandFailed(words, returncode, "\n".join(tail))


def start(argv: list[str | Path], *, output: Path) -> subprocess.Popen:
    """Start a long-running program (a VM) in the background, its output into a file; the caller stops
    it by its own process handle."""
    words = [str(a) for a in argv]
    log.debug("$ %s &", shlex.join(words))
    with output.open("wb") as sink:
        return subprocess.Popen(words, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
