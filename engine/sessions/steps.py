"""Work done in steps: a generator whose next() does one bounded piece and whose return value is the result
(Session.generate_steps, Service.begin: the server runs long requests a slice at a time, engine/server/jobs.py)."""

from __future__ import annotations

from collections.abc import Callable, Generator


def at_once(fn: Callable, *args) -> Generator:
    """fn(*args) as steps: the first next() calls it and returns its result."""
    yield from ()
    return fn(*args)


def finish(steps: Generator, each: Callable | None = None):
    """Run `steps` to the end, passing what each step yields to `each` (if given); returns their result."""
    while True:
        try:
            out = next(steps)
        except StopIteration as done:
            return done.value
        if each is not None:
            each(out)


def quiet(steps: Generator) -> Generator[list, None, object]:
    """The same steps, each yielding an empty list instead of what it yields (work whose output is not final,
    such as a best-of candidate); returns their result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        yield []
