"""`ui.handler_signatures`: the remembered answer is NiceGUI's own answer for every kind of
callable a page hands NiceGUI, and NiceGUI's element machinery uses it once installed."""

from __future__ import annotations

import functools
from typing import Any

from nicegui import helpers
from nicegui.classes import Classes

from ui import handler_signatures as hs


class Thing:
    def no_event(self) -> None: ...
    def with_event(self, e: Any) -> None: ...
    def optional_event(self, e: Any = None) -> None: ...
    def star(self, *args: Any, **kwargs: Any) -> None: ...
    def kw_only(self, *, e: Any) -> None: ...

    @classmethod
    def cls_no_event(cls) -> None: ...

    @classmethod
    def cls_event(cls, e: Any) -> None: ...

    @staticmethod
    def static_event(e: Any) -> None: ...

    def __call__(self, e: Any) -> None: ...


def plain(e: Any) -> None: ...
def plain_none() -> None: ...
async def coro_event(e: Any) -> None: ...
async def coro_none() -> None: ...
def kw_default(*, e: Any = 1) -> None: ...


def wrapped(f: Any) -> Any:
    @functools.wraps(f)
    def inner(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return inner


def test_the_remembered_answer_is_nicegui_s_answer_for_every_kind_of_callable():
    t = Thing()
    same_code = [(lambda i=i: i) for i in range(3)] + [(lambda e, i=i: i) for i in range(3)]
    callables = [
        t.no_event, t.with_event, t.optional_event, t.star, t.kw_only,
        Thing.cls_no_event, Thing.cls_event, Thing.static_event, Thing.no_event, t,
        plain, plain_none, coro_event, coro_none, kw_default,
        lambda: None, lambda e: None, lambda e=None: None, lambda *a: None,
        wrapped(plain), wrapped(plain_none), functools.partial(plain, 1), functools.partial(plain),
        *same_code, print, len,
    ]  # fmt: skip
    for _ in range(2):  # the first call fills the memory, the second answers from it
        for f in callables:
            assert hs.expects_arguments(f) == hs._original(f), f

    # A function whose defaults change answers anew (same code, other key).
    def g(e: Any) -> None: ...

    assert hs.expects_arguments(g) is True
    g.__defaults__ = (None,)
    assert hs.expects_arguments(g) is False and hs._original(g) is False


def test_nicegui_uses_it_once_installed():
    hs.install()
    assert helpers.expects_arguments is hs.expects_arguments

    class Owner:
        pass

    Classes(element=Owner())  # an element's classes register their change handler
    assert hs._key(Classes(element=Owner())._update) in hs._answers
