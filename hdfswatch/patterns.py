"""Source patterns: which HDFS paths a source watches (sans-IO).

A pattern is an absolute path whose segments may hold globs:

- `*`, `?`, `[abc]`, `[!abc]`, `{a,b}` match within one segment;
- `**` as a whole segment matches any number of directories (a trailing `/**` means "any
  file at any depth below");
- a pattern without wildcards in its last segment names a directory: the files directly in it
  and in Hive-style partition subdirectories (`dt=2024-01-01/hour=03/...`) at any depth.

    /data/clicks/**          every file under /data/clicks
    /data/t/*.parquet        Parquet files directly in /data/t
    /data/t/dt=*/*           files one partition level down
    /data/t                  files in /data/t and in its key=value subdirectories

Names that are never ready, whatever the pattern: hidden names (`.x`, `_x`) matched by a
wildcard, anything under a `_temporary` directory, and `*._COPYING_` (the temporary name of
`hdfs dfs -put`). A hidden name written literally in a pattern (`/data/_landing/**`) is
allowed: the user asked for it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hdfswatch.errors import ConfigError

_LITERAL, _GLOB, _ANY_DEPTH, _PARTITIONS, _ANY_NAME = range(5)
_WILDCARDS = set("*?[{")


def is_hidden_name(name: str) -> bool:
    """Hidden or temporary by the Hadoop convention (FileInputFormat's hidden-file filter)."""
    return name.startswith((".", "_")) or name.endswith("._COPYING_")


def _translate_segment(seg: str) -> str:
    """Regex for one glob segment (no '/')."""
    out: list[str] = []
    i, n = 0, len(seg)
    depth = 0
    while i < n:
        c = seg[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(seg[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = seg.find("]", i + 2 if i + 1 < n and seg[i + 1] in "!^" else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = seg[i + 1:j]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
                continue
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ConfigError(f"unbalanced '{{' in pattern segment {seg!r}")
    return "".join(out)


def _split(path: str) -> list[str]:
    return [s for s in path.split("/") if s and s != "."]


@dataclass(frozen=True)
class _Token:
    kind: int
    text: str = ""
    regex: re.Pattern[str] | None = None
    allows_hidden: bool = False


def _compile(pattern: str) -> tuple[_Token, ...]:
    if not pattern.startswith("/"):
        raise ConfigError(f"pattern {pattern!r} must be an absolute HDFS path")
    segments = _split(pattern)
    tokens: list[_Token] = []
    for seg in segments:
        if ".." == seg:
            raise ConfigError(f"pattern {pattern!r}: '..' is not allowed")
        if seg == "**":
            if not tokens or tokens[-1].kind != _ANY_DEPTH:
                tokens.append(_Token(_ANY_DEPTH))
        elif set(seg) & _WILDCARDS:
            try:
                regex = re.compile(_translate_segment(seg) + r"\Z", re.DOTALL)
            except re.error as exc:  # e.g. a reversed range `[z-a]`
                raise ConfigError(f"pattern {pattern!r}: {seg!r} is not a valid glob ({exc})") from None
            tokens.append(_Token(_GLOB, seg, regex, allows_hidden=seg.startswith((".", "_"))))
        else:
            tokens.append(_Token(_LITERAL, seg.replace("\\", "")))
    if not tokens:
        tokens = [_Token(_PARTITIONS), _Token(_ANY_NAME)]
    elif tokens[-1].kind == _ANY_DEPTH:
        tokens.append(_Token(_ANY_NAME))
    elif tokens[-1].kind == _LITERAL:
        tokens += [_Token(_PARTITIONS), _Token(_ANY_NAME)]
    return tuple(tokens)


class _Compiled:
    __slots__ = ("pattern", "prefix", "root", "tokens")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.tokens = _compile(pattern)
        literal = []
        for tok in self.tokens:
            if tok.kind != _LITERAL:
                break
            literal.append(tok.text)
        # A fully literal pattern ends in [_PARTITIONS, _ANY_NAME], so `literal` is its dir.
        self.root = "/" + "/".join(literal)
        # Every match starts with this: most edit-stream paths are rejected by one startswith.
        self.prefix = self.root.rstrip("/") + "/"

    def _closure(self, states: set[int]) -> set[int]:
        stack = list(states)
        out = set(states)
        while stack:
            i = stack.pop()
            if i < len(self.tokens) and self.tokens[i].kind in (_ANY_DEPTH, _PARTITIONS):
                if i + 1 not in out:
                    out.add(i + 1)
                    stack.append(i + 1)
        return out

    def _step(self, states: set[int], seg: str) -> set[int]:
        hidden = seg.startswith((".", "_"))
        nxt: set[int] = set()
        tokens = self.tokens
        for i in states:
            if i >= len(tokens):
                continue
            tok = tokens[i]
            kind = tok.kind
            if kind == _LITERAL:
                if seg == tok.text:
                    nxt.add(i + 1)
            elif hidden and not tok.allows_hidden:
                continue
            elif kind == _GLOB:
                assert tok.regex is not None
                if tok.regex.match(seg):
                    nxt.add(i + 1)
            elif kind == _ANY_DEPTH:
                nxt.add(i)
            elif kind == _PARTITIONS:
                if "=" in seg:
                    nxt.add(i)
            elif kind == _ANY_NAME:
                nxt.add(i + 1)
        return self._closure(nxt) if nxt else nxt

    def run(self, segments: Iterable[str]) -> set[int]:
        states = self._closure({0})
        for seg in segments:
            states = self._step(states, seg)
            if not states:
                break
        return states

    def matches(self, segments: Sequence[str]) -> bool:
        return len(self.tokens) in self.run(segments)

    def could_contain(self, segments: Sequence[str]) -> bool:
        return any(i < len(self.tokens) for i in self.run(segments))


def normalize(path: str) -> str:
    return "/" + "/".join(_split(path))


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> _Compiled:
    # Compiled patterns are immutable; a matcher rebuilt for every batch or every path (as a
    # reloadable registry does) then costs a dictionary lookup per pattern.
    return _Compiled(pattern)


class PathMatcher:
    """Matches HDFS paths against a set of source patterns (see the module doc)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: tuple[str, ...] = tuple(dict.fromkeys(patterns))
        self._compiled = [_compiled(p) for p in self.patterns]

    def __bool__(self) -> bool:
        return bool(self._compiled)

    def __repr__(self) -> str:
        return f"PathMatcher({list(self.patterns)!r})"

    @staticmethod
    def _ignored(segments: Sequence[str]) -> bool:
        return bool(segments) and ("_temporary" in segments
                                   or segments[-1].endswith("._COPYING_"))

    def which(self, path: str) -> str | None:
        """The first pattern that `path` (a file) matches, or None."""
        candidates = [c for c in self._compiled if path.startswith(c.prefix)]
        if not candidates:
            return None
        segments = _split(path)
        if not segments or self._ignored(segments):
            return None
        for c in candidates:
            if c.matches(segments):
                return c.pattern
        return None

    def matches(self, path: str) -> bool:
        """Whether a file at `path` belongs to a source (and is not hidden or temporary)."""
        return self.which(path) is not None

    def could_contain(self, directory: str) -> bool:
        """Whether a file somewhere under `directory` could match (prunes listings and
        directory renames)."""
        segments = _split(directory)
        if "_temporary" in segments:
            return False
        return any(c.could_contain(segments) for c in self._compiled)

    def roots(self) -> list[str]:
        """The directories a listing must start from: each pattern's literal prefix, without
        those nested in another."""
        roots = sorted({c.root for c in self._compiled}, key=lambda r: (r.count("/"), r))
        out: list[str] = []
        for r in roots:
            if not any(r == o or r.startswith(o.rstrip("/") + "/") for o in out):
                out.append(r)
        return out
