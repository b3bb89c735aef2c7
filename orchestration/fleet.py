"""Work on many routers at once: one action per router on a bounded pool of threads, with progress as each
one ends, and every router's outcome (None, or its error) rather than stopping at the first failure.
"""

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from vrpipe.errors import VrpipeError


def for_each(
    names: Sequence[str],
    action: Callable[[str], object],
    parallel: int,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, str | None]:
    """Run action(name) for every name, `parallel` at a time; return {name: None or error text}."""
    results, started = {}, time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(names)))) as pool:
        futures = {pool.submit(action, name): name for name in names}
        try:
            for future in as_completed(futures):
                name, error = futures[future], future.exception()
                results[name] = _text(error) if error else None
                progress(
                    f"[{len(results)}/{len(names)}] {name}: {results[name] or 'ok'} ({time.monotonic() - started:.1f}s)"
                )
        except BaseException:
            # Ctrl-C: routers not begun are left alone (those begun finish) instead of all being worked through.
            pool.shutdown(cancel_futures=True)
            raise
    return {name: results[name] for name in names}


def _text(error: BaseException) -> str:
    """An operator's error as its message; anything else is a bug, named by its type."""
    return str(error) if isinstance(error, VrpipeError) else f"{type(error).__name__}: {error}"
