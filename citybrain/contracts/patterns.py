"""Whether a contract's new ``pattern`` accepts every value its old one accepted (a widened pattern).

A contract that widens a pattern (a postal code of any country where it took six digits) stays backward
compatible: every record of the topic's history still passes. Patterns of the shape contracts use —
anchored with ``^`` and ``$``, made of literals, character classes and ranges, groups, alternatives and
repeats — are compared as automata (:func:`widens`); any other pattern (``\\d``, lookarounds,
back-references, flags, no anchors) is not judged, and a change to it counts as breaking, as before.
"""

from __future__ import annotations

import re
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

__all__ = ["widens"]

#: At most this many automaton states are built or pairs of state sets explored; past it, no judgement.
MAX_STATES = 20_000
_Ranges = tuple[tuple[int, int], ...]


class _Unsupported(Exception):
    """A pattern outside the compared shape."""


class _Automaton:
    """A Thompson NFA: ``edges[state]`` is a list of (character ranges, next state), ``empty`` its ε-moves."""

    def __init__(self) -> None:
        self.edges: list[list[tuple[_Ranges, int]]] = []
        self.empty: list[list[int]] = []

    def state(self) -> int:
        if len(self.edges) >= MAX_STATES:
            raise _Unsupported("too many states")
        self.edges.append([])
        self.empty.append([])
        return len(self.edges) - 1

    def closure(self, states: frozenset[int]) -> frozenset[int]:
        seen, todo = set(states), list(states)
        while todo:
            for nxt in self.empty[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return frozenset(seen)

    def step(self, states: frozenset[int], char: int) -> frozenset[int]:
        return self.closure(frozenset(nxt for s in states for ranges, nxt in self.edges[s]
                                      if any(lo <= char <= hi for lo, hi in ranges)))


def _compile(pattern: str) -> tuple[_Automaton, int, int]:
    """The automaton of an anchored pattern: (automaton, start, accepting state); raises _Unsupported."""
    try:
        parsed = sre_parse.parse(pattern)
    except Exception as exc:   # re.error and the parser's internal errors alike: not judged
        raise _Unsupported(str(exc)) from None
    if parsed.state.flags & ~(sre_constants.SRE_FLAG_UNICODE) or parsed.state.groupdict or \
            parsed.state.grouprefpos:
        raise _Unsupported("flags or named groups")
    items = list(parsed)
    at = sre_constants.AT
    if len(items) < 2 or items[0] != (at, sre_constants.AT_BEGINNING) or items[-1] != (at, sre_constants.AT_END):
        raise _Unsupported("not anchored with ^ and $")
    nfa = _Automaton()
    start, end = _sequence(nfa, items[1:-1])
    return nfa, start, end


def _sequence(nfa: _Automaton, items: list[Any]) -> tuple[int, int]:
    start = current = nfa.state()
    for op, arg in items:
        first, last = _item(nfa, op, arg)
        nfa.empty[current].append(first)
        current = last
    return start, current


def _item(nfa: _Automaton, op: Any, arg: Any) -> tuple[int, int]:
    c = sre_constants
    if op in (c.LITERAL, c.IN):
        first, last = nfa.state(), nfa.state()
        nfa.edges[first].append((_ranges(op, arg), last))
        return first, last
    if op is c.SUBPATTERN:
        _group, add_flags, del_flags, body = arg
        if add_flags or del_flags:
            raise _Unsupported("inline flags")
        return _sequence(nfa, list(body))
    if op is c.BRANCH:
        first, last = nfa.state(), nfa.state()
        for branch in arg[1]:
            a, b = _sequence(nfa, list(branch))
            nfa.empty[first].append(a)
            nfa.empty[b].append(last)
        return first, last
    if op in (c.MAX_REPEAT, c.MIN_REPEAT):
        low, high, body = arg
        first = current = nfa.state()
        for _ in range(low):
            a, b = _sequence(nfa, list(body))
            nfa.empty[current].append(a)
            current = b
        if high == c.MAXREPEAT:
            a, b = _sequence(nfa, list(body))
            nfa.empty[current].append(a)
            nfa.empty[b].append(current)
            return first, current
        last = nfa.state()
        nfa.empty[current].append(last)
        for _ in range(high - low):
            a, b = _sequence(nfa, list(body))
            nfa.empty[current].append(a)
            nfa.empty[b].append(last)
            current = b
        return first, last
    raise _Unsupported(f"{op} is not compared")


def _ranges(op: Any, arg: Any) -> _Ranges:
    c = sre_constants
    if op is c.LITERAL:
        return ((arg, arg),)
    out = []
    for kind, value in arg:
        if kind is c.LITERAL:
            out.append((value, value))
        elif kind is c.RANGE:
            out.append(value)
        else:   # NEGATE, CATEGORY (\d is any Unicode digit), ...: not compared
            raise _Unsupported(f"{kind} in a character class")
    return tuple(out)


def widens(old: str, new: str) -> bool | None:
    """True when every string ``old`` matches, ``new`` matches too; False when one does not (``new`` narrows or
    changes the pattern); None when either pattern is outside the shape compared."""
    try:
        a, a_start, a_end = _compile(old)
        b, b_start, b_end = _compile(new)
    except _Unsupported:
        return None
    bounds = sorted({p for nfa in (a, b) for edges in nfa.edges for ranges, _ in edges
                     for lo, hi in ranges for p in (lo, hi + 1)})
    chars = bounds[:-1]   # one character of each interval between bounds: every transition sees them alike
    first = (a.closure(frozenset({a_start})), b.closure(frozenset({b_start})))
    seen, todo = {first}, [first]
    while todo:
        olds, news = todo.pop()
        if a_end in olds and b_end not in news:
            return False
        for char in chars:
            nxt = (a.step(olds, char), b.step(news, char))
            if nxt[0] and nxt not in seen:
                if len(seen) >= MAX_STATES:
                    return None
                seen.add(nxt)
                todo.append(nxt)
    return True


def regex_problem(name: str, pattern: Any) -> str | None:
    """Why ``pattern``, declared as ``name``, is not a regular expression at all, or None."""
    if not isinstance(pattern, str):
        return f"{name} must be a regular expression (text), got {pattern!r}"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{name} {pattern!r} is not a regular expression ({exc})"
    return None
