"""The one way the host side runs a program: an argv list (never a shell string), logged, always with a
timeout, optionally inside a network namespace; a failure raises CommandError naming the command and the
end of what it printed. `spawn()` starts a long-running program (a VM, a server) in the background.
"""

import logging
import os
import shlex
import subprocess
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import CommandError

log = logging.getLogger("vrpipe.run")
TAIL_LINES = 25
TAIL_CHARS = 4000
DEFAULT_TIMEOUT = 600.0

Argv = Sequence[str | Path | int]  # each word is passed as str(word)


def _words(argv: Argv, ns: str | None) -> list[str]:
    words = [str(a) for a in argv]
    return ["ip", "netns", "exec", ns, *words] if ns else words


def run(
    argv: Argv,
    *,
    ns: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    stream: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run argv (in network namespace `ns`, with `env` added to ours) and return what it printed.
    stream: log each line as it comes (for long tools that show progress); stdout then holds the last lines.
    With check, a non-zero exit raises CommandError; a timeout or a missing program always does."""
    words = _words(argv, ns)
    log.debug("$ %s", shlex.join(words))
    full_env = {**os.environ, **env} if env else None
    try:
        if stream:
            done = _streamed(words, full_env, cwd, input, timeout)
        else:
            done = subprocess.run(
                words, env=full_env, cwd=cwd, input=input, capture_output=True, text=True,
                errors="replace", timeout=timeout, check=False,
            )
    except FileNotFoundError as e:
        raise CommandError(words, 127, f"{words[0]}: not installed", hint="run ./bootstrap.sh") from e
    except subprocess.TimeoutExpired as e:
        raise CommandError(words, "timeout", f"no answer within {timeout:.0f} s") from e
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout or "").strip()
        raise CommandError(words, done.returncode, said[-TAIL_CHARS:])
    return done


def _streamed(
    words: list[str], env: Mapping[str, str] | None, cwd: Path | str | None, input: str | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    with subprocess.Popen(
        words, env=env, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace",
    ) as proc:
        # A streamed program could hold its output open forever: a timer kills it at the deadline.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            if input is not None and proc.stdin:
                proc.stdin.write(input)
                proc.stdin.close()
            for line in proc.stdout or ():
                tail.append(line.rstrip())
                log.info("  %s", line.rstrip())
            returncode = proc.wait()
        finally:
            timer.cancel()
    if expired.is_set():
        raise subprocess.TimeoutExpired(words, timeout)
    return subprocess.CompletedProcess(words, returncode, "\n".join(tail), "")


def spawn(
    argv: Argv,
    *,
    ns: str | None = None,
    env: Mapping[str, str] | None = None,
    output: Path | None = None,
    append: bool = False,
    pipe: bool = False,
    cwd: Path | str | None = None,
    new_session: bool = False,
) -> subprocess.Popen[str]:
    """Start a long-running program in the background (env: its whole environment, when given), its output
    into the file `output`, or readable from the handle with pipe, or discarded; the caller stops it by its
    own handle."""
    words = _words(argv, ns)
    log.debug("$ %s &", shlex.join(words))
    options: dict[str, Any] = dict(stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=new_session, text=True)
    if output is not None:
        with output.open("ab" if append else "wb") as sink:
            return subprocess.Popen(words, stdout=sink, stderr=subprocess.STDOUT, **options)
    return subprocess.Popen(
        words, stdout=subprocess.PIPE if pipe else subprocess.DEVNULL, stderr=subprocess.DEVNULL, **options
    )
