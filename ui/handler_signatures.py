"""NiceGUI's "does this handler take the event argument?" answered once per function, not once
per element.

NiceGUI (3.18) calls `helpers.expects_arguments(handler)` — an `inspect.signature` — for the
change handler of every element's classes, props and style when the element is created (three
per element), and for handlers it calls without a pre-resolved answer. A page of ours has a few
hundred elements, and every user who opens or reconnects a page builds one: profiled with
`py-spy record` on the dashboard while `bench.users --users 300` connected, 23.5 % of the
dashboard's CPU was `expects_arguments`, nearly all of it for those per-element handlers
(bound methods of the same three classes, the same answer every time).

The answer depends only on the function's parameters: its code, how many positional defaults
and which keyword-only defaults it has, and whether it is bound (a bound method's first
parameter is given). `install()` replaces `nicegui.helpers.expects_arguments` with a version
that remembers the answer under exactly that key, for plain functions and bound methods whose
signature comes from their own code (no `__wrapped__` or `__signature__`); any other callable
(a `functools.partial`, an object with `__call__`, a decorated function) goes to NiceGUI's own
function every time. NiceGUI looks the helper up on its `helpers` module at each call, so the
replacement reaches every caller. tests/test_handler_signatures.py compares both on every kind
of callable.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Hashable
from typing import Any

from nicegui import helpers

_original: Callable[[Callable[..., Any]], bool] = helpers.expects_arguments
_answers: dict[Hashable, bool] = {}  # one per function definition: bounded by the program's code


def _key(func: Callable[..., Any]) -> Hashable | None:
    """What `expects_arguments(func)` depends on, or None when it is not this simple."""
    bound = isinstance(func, types.MethodType)
    target = func.__func__ if bound else func  # type: ignore[attr-defined]
    if type(target) is not types.FunctionType:
        return None
    attrs = target.__dict__
    if "__wrapped__" in attrs or "__signature__" in attrs:
        return None  # inspect.signature follows these
    return (
        target.__code__,
        bound,
        len(target.__defaults__ or ()),
        frozenset(target.__kwdefaults__ or ()),
    )


def expects_arguments(func: Callable[..., Any]) -> bool:
    """`nicegui.helpers.expects_arguments`, remembered per function definition."""
    key = _key(func)
    if key is None:
        return _original(func)
    answer = _answers.get(key)
    if answer is None:
        answer = _answers[key] = _original(func)
    return answer


def install() -> None:
    """Make NiceGUI use `expects_arguments` (idempotent; before pages are built)."""
    helpers.expects_arguments = expects_arguments  # type: ignore[assignment]
