"""Constrained decoding: only tokens that can continue a valid JSON document may be sampled.

A JSON Schema (or "any JSON value") compiles to a byte-level pushdown matcher. Its state
is a set of stacks of frames (a set, because ``anyOf`` and enum alternatives are followed
side by side until the bytes decide between them). At each step the vocabulary's token
trie is walked from the current state: a subtree whose first byte the matcher refuses is
skipped whole, and inside a plain string a subtree without quote, backslash or control
bytes is accepted whole, without walking it. The resulting mask is cached per state, so
a document revisits its states (every string body, every "after a value") at the cost
of a dictionary lookup. Anchors: llama.cpp's GBNF ``json.gbnf`` and json_schema_to_grammar,
Ollama's ``format``.

What a schema may use: ``type`` (one or a list), ``properties``, ``required``,
``additionalProperties`` (objects with ``properties`` hold only those), ``items``,
``minItems``, ``maxItems``, ``enum``, ``const``, ``anyOf``/``oneOf``, ``$ref`` into
``$defs``/``definitions``, ``minLength``/``maxLength``, and ``pattern`` for simple regular expressions (literals,
classes, ``.``, groups, ``|``, ``? * + {m,n}``, anchors). Annotations (``title``,
``description``, ``default``, ``examples``, ``format``) are accepted and not enforced; any
other keyword is refused with a :class:`JsonSchemaError` naming it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from .sampling import TokenConstraint

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]

# Frame = (kind, schema node, phase, count, whitespace run, bytes, byte-string set)
Frame = tuple[int, int, int, int, int, bytes, frozenset[bytes]]
Stack = tuple[Frame, ...]
State = frozenset[Stack]

K_VALUE: Final = 0
K_OBJ: Final = 1
K_ARR: Final = 2
K_STR: Final = 3
K_NUM: Final = 4
K_LIT: Final = 5
K_PAT: Final = 6

# Object phases: after "{", inside a key, before ":", after a value, after ","
O_START: Final = 0
O_KEY: Final = 1
O_COLON: Final = 2
O_AFTER: Final = 3
O_COMMA: Final = 4
# Array phases: after "[", after an item, after ","
A_START: Final = 0
A_AFTER: Final = 1
A_COMMA: Final = 2
# String phases: body, after a backslash, then the four hex digits of \\uXXXX
S_BODY: Final = 0
S_ESC: Final = 1
S_HEX1: Final = 2
S_HEX4: Final = 5
# Number phases
N_MINUS: Final = 0
N_ZERO: Final = 1
N_INT: Final = 2
N_DOT: Final = 3
N_FRAC: Final = 4
N_E: Final = 5
N_ESIGN: Final = 6
N_EXP: Final = 7

T_OBJ: Final = 1
T_ARR: Final = 2
T_STR: Final = 4
T_NUM: Final = 8
T_INT: Final = 16
T_BOOL: Final = 32
T_NULL: Final = 64
T_ANY: Final = 127
_TYPE_BITS: Final = {"object": T_OBJ, "array": T_ARR, "string": T_STR, "number": T_NUM | T_INT,
                     "integer": T_INT, "boolean": T_BOOL, "null": T_NULL}

# Whitespace between tokens is allowed in runs of at most this many bytes (as llama.cpp's
# json.gbnf), so a sampled model cannot drift into endless blank lines.
MAX_WS: Final = 20
# Digits in a number, at most: a model that keeps writing digits must stop somewhere.
MAX_NUMBER_BYTES: Final = 24
# Masks kept per compiled schema (each is at most the smaller of its allowed/refused ids).
MAX_CACHED_STATES: Final = 4096

_WS: Final = frozenset(b" \t\n\r")
_DIGITS: Final = frozenset(b"0123456789")
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES: Final = frozenset(b"\"\\/bfnrtu")
_EMPTY: Final[frozenset[bytes]] = frozenset()
_ANNOTATIONS: Final = frozenset({"title", "description", "default", "examples", "format", "$schema", "$id",
                                 "$comment", "strict", "$defs", "definitions", "name", "readOnly", "writeOnly",
                                 "deprecated"})
_KEYWORDS: Final = frozenset({"type", "properties", "required", "additionalProperties", "items", "minItems",
                              "maxItems", "enum", "const", "anyOf", "oneOf", "$ref", "pattern", "minLength",
                              "maxLength"})
UNBOUNDED: Final = 1 << 30


class JsonSchemaError(ValueError):
    """A schema uses something the constraint cannot enforce, or is malformed."""


class SchemaNode:
    """One compiled schema: which types, and the details of each."""

    def __init__(self) -> None:
        self.types = T_ANY
        self.literals: frozenset[bytes] | None = None
        self.props: dict[bytes, int] = {}
        self.required: frozenset[bytes] = _EMPTY
        self.extra = -1  # node for keys outside ``props`` (-1: none allowed)
        self.items = -1
        self.min_items = 0
        self.max_items = -1
        self.any_of: list[int] = []
        self.pattern: Regex | None = None
        self.min_len = 0  # string length bounds, in characters
        self.max_len = -1


# ----------------------------------------------------------------------------- regex

_SHORT: Final = {"d": "0123456789", "w": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_",
                 "s": " \t\n\r\f\v"}

class Regex:
    """A Thompson NFA for a simple regular expression over characters.

    States are ints; ``step`` maps a frozenset of states and a character to the next set.
    A pattern that is not anchored gets ``.*`` on its open side (JSON Schema patterns search).
    """

    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.pos = 0
        # Per state: (character test or None for epsilon, targets)
        self.tests: list[tuple[bool, str] | None] = []
        self.edges: list[list[int]] = []
        anchored_start = pattern.startswith("^")
        anchored_end = pattern.endswith("$") and not pattern.endswith("\\$")
        body = pattern[1 if anchored_start else 0: len(pattern) - (1 if anchored_end else 0)]
        self.src = body
        start, end = self._alt()
        if self.pos != len(body):
            raise JsonSchemaError(f"pattern {pattern!r}: unexpected {body[self.pos]!r} at {self.pos}")
        if not anchored_start:
            s, e = self._any_star()
            self._link(e, start)
            start = s
        if not anchored_end:
            s, e = self._any_star()
            self._link(end, s)
            end = e
        self.accept = end
        self._cache: dict[tuple[int, str], int] = {}
        self.sets: list[frozenset[int]] = []
        self._ids: dict[frozenset[int], int] = {}
        self.start = self.intern(self._closure(frozenset({start})))

    def intern(self, states: frozenset[int]) -> int:
        """A small int naming a set of NFA states (so matcher frames stay small and hashable)."""
        sid = self._ids.get(states)
        if sid is None:
            sid = len(self.sets)
            self.sets.append(states)
            self._ids[states] = sid
        return sid

    def _new(self, test: tuple[bool, str] | None) -> int:
        self.tests.append(test)
        self.edges.append([])
        return len(self.tests) - 1

    def _link(self, a: int, b: int) -> None:
        self.edges[a].append(b)

    def _any_star(self) -> tuple[int, int]:
        s = self._new(None)
        c = self._new((True, ""))  # negated empty class: any character
        e = self._new(None)
        self._link(s, c)
        self._link(s, e)
        self._link(c, s)
        return s, e

    def _peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else ""

    def _alt(self) -> tuple[int, int]:
        s, e = self._seq()
        if self._peek() != "|":
            return s, e
        start = self._new(None)
        end = self._new(None)
        self._link(start, s)
        self._link(e, end)
        while self._peek() == "|":
            self.pos += 1
            s2, e2 = self._seq()
            self._link(start, s2)
            self._link(e2, end)
        return start, end

    def _seq(self) -> tuple[int, int]:
        start = self._new(None)
        end = start
        while self._peek() not in ("", "|", ")"):
            s, e = self._quantified()
            self._link(end, s)
            end = e
        return start, end

    def _quantified(self) -> tuple[int, int]:
        atom_start = self.pos
        s, e = self._atom()
        q = self._peek()
        if q == "?":
            lo, hi = 0, 1
        elif q == "*":
            lo, hi = 0, -1
        elif q == "+":
            lo, hi = 1, -1
        elif q == "{":
            close = self.src.find("}", self.pos)
            parts = self.src[self.pos + 1:close].split(",") if close > 0 else []
            if not 1 <= len(parts) <= 2 or not parts[0].strip().isdigit() \
                    or (len(parts) == 2 and parts[1].strip() and not parts[1].strip().isdigit()):
                raise JsonSchemaError(f"pattern {self.src!r}: bad repetition at {self.pos}")
            lo = int(parts[0])
            hi = lo if len(parts) == 1 else (int(parts[1]) if parts[1].strip() else -1)
            if lo > 100 or hi > 100 or (0 <= hi < lo):
                raise JsonSchemaError(f"pattern {self.src!r}: repetition {{{lo},{hi}}} is not supported")
            self.pos = close
        else:
            return s, e
        after = self.pos + 1
        # Each repetition needs its own copy of the atom's states: parse it again.
        pieces: list[tuple[int, int]] = [(s, e)]
        for _ in range(max(lo + (1 if hi < 0 else hi - lo), 1) - 1):
            self.pos = atom_start
            pieces.append(self._atom())
        self.pos = after
        start = self._new(None)
        end = self._new(None)
        cur = start
        for i in range(lo):
            self._link(cur, pieces[i][0])
            cur = pieces[i][1]
        if hi < 0:  # the last copy loops
            loop = self._new(None)
            self._link(cur, loop)
            self._link(loop, pieces[lo][0])
            self._link(pieces[lo][1], loop)
            self._link(loop, end)
            return start, end
        for i in range(lo, hi):
            self._link(cur, end)
            self._link(cur, pieces[i][0])
            cur = pieces[i][1]
        self._link(cur, end)
        return start, end

    def _atom(self) -> tuple[int, int]:
        c = self._peek()
        if c == "(":
            self.pos += 1
            if self.src.startswith("?:", self.pos):
                self.pos += 2
            s, e = self._alt()
            if self._peek() != ")":
                raise JsonSchemaError(f"pattern {self.src!r}: missing ')'")
            self.pos += 1
            return s, e
        if c in ("", "*", "+", "?", "{", ")", "|"):
            raise JsonSchemaError(f"pattern {self.src!r}: unexpected {c!r} at {self.pos}")
        if c == "[":
            test = self._class()
        elif c == ".":
            self.pos += 1
            test = (True, "\n")
        elif c == "\\":
            test = (False, self._escape())
        elif c in "^$":
            raise JsonSchemaError(f"pattern {self.src!r}: anchors are supported only at the ends")
        else:
            self.pos += 1
            test = (False, c)
        s = self._new(test)
        e = self._new(None)
        self._link(s, e)
        return s, e

    def _escape(self) -> str:
        """Characters of an escape (``\\d`` gives all digits); moves past it."""
        c = self.src[self.pos + 1] if self.pos + 1 < len(self.src) else ""
        self.pos += 2
        if c in _SHORT:
            return _SHORT[c]
        if c in ("D", "W", "S") or c == "":
            raise JsonSchemaError(f"pattern {self.src!r}: \\{c} is not supported")
        return {"n": "\n", "t": "\t", "r": "\r"}.get(c, c)

    def _class(self) -> tuple[bool, str]:
        self.pos += 1
        negate = self._peek() == "^"
        if negate:
            self.pos += 1
        chars: list[str] = []
        first = True
        while self._peek() != "]" or first:
            c = self._peek()
            if c == "":
                raise JsonSchemaError(f"pattern {self.src!r}: missing ']'")
            first = False
            if c == "\\":
                chars.append(self._escape())
                continue
            self.pos += 1
            if self._peek() == "-" and self.pos + 1 < len(self.src) and self.src[self.pos + 1] != "]":
                hi = self.src[self.pos + 1]
                if ord(hi) < ord(c) or ord(hi) - ord(c) > 5000:
                    raise JsonSchemaError(f"pattern {self.src!r}: bad range {c}-{hi}")
                chars.append("".join(chr(x) for x in range(ord(c), ord(hi) + 1)))
                self.pos += 2
            else:
                chars.append(c)
        self.pos += 1
        return negate, "".join(chars)

    def _closure(self, states: frozenset[int]) -> frozenset[int]:
        out = set(states)
        todo = list(states)
        while todo:
            s = todo.pop()
            if self.tests[s] is None:
                for t in self.edges[s]:
                    if t not in out:
                        out.add(t)
                        todo.append(t)
        return frozenset(out)

    def step(self, sid: int, ch: str) -> int:
        """The interned state set after ``ch`` from set ``sid``; -1 when nothing matches."""
        key = (sid, ch)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        nxt: set[int] = set()
        for s in self.sets[sid]:
            test = self.tests[s]
            if test is not None and ((ch in test[1]) != test[0]):
                nxt.update(self.edges[s])
        out = self.intern(self._closure(frozenset(nxt))) if nxt else -1
        if len(self._cache) < 100_000:
            self._cache[key] = out
        return out

    def accepts(self, sid: int) -> bool:
        return self.accept in self.sets[sid]

    def takes_non_ascii(self, sid: int) -> bool:
        """Whether some character above U+007F can come next."""
        for s in self.sets[sid]:
            test = self.tests[s]
            if test is not None and (test[0] or any(ord(ch) > 0x7F for ch in test[1])):
                return True
        return False


# ----------------------------------------------------------------------------- schema

class Grammar:
    """A compiled schema: its nodes and the byte-level matcher over them."""

    def __init__(self, schema: Any) -> None:
        self.nodes: list[SchemaNode] = []
        self.patterns: list[Regex] = []
        self.pattern_ids: dict[int, int] = {}
        self._root_schema = schema
        self._refs: dict[str, int] = {}
        self.root = self._compile(schema, "schema")
        self.start: State = frozenset({((K_VALUE, self.root, 0, 0, 0, b"", _EMPTY),)})

    # -------------------------------------------------------------- compiling
    def _new(self) -> int:
        self.nodes.append(SchemaNode())
        return len(self.nodes) - 1

    def _resolve(self, ref: str, where: str) -> int:
        if ref in self._refs:
            return self._refs[ref]
        target: Any = self._root_schema
        if not ref.startswith("#"):
            raise JsonSchemaError(f"{where}: only local $ref ('#/$defs/...') is supported, got {ref!r}")
        for part in [p for p in ref[1:].split("/") if p]:
            if not isinstance(target, dict) or part not in target:
                raise JsonSchemaError(f"{where}: $ref {ref!r} does not resolve")
            target = target[part]
        node = self._new()  # placeholder first, so recursive schemas terminate
        self._refs[ref] = node
        real = self._compile(target, ref)
        self.nodes[node] = self.nodes[real]
        return node

    def _compile(self, schema: Any, where: str) -> int:
        if schema is True or schema == {}:
            idx = self._new()  # any value: objects of anything, arrays of anything
            self.nodes[idx].extra = idx
            self.nodes[idx].items = idx
            return idx
        if not isinstance(schema, dict):
            raise JsonSchemaError(f"{where} must be a JSON Schema object, got {schema!r:.60}")
        unknown = sorted(k for k in schema if k not in _KEYWORDS and k not in _ANNOTATIONS)
        if unknown:
            raise JsonSchemaError(f"{where}: the keyword {unknown[0]!r} is not supported by constrained decoding "
                                  f"(supported: {', '.join(sorted(_KEYWORDS))})")
        if "$ref" in schema:
            return self._resolve(str(schema["$ref"]), where)
        idx = self._new()
        n = self.nodes[idx]
        alts = schema.get("anyOf", schema.get("oneOf"))
        if alts is not None:
            if not isinstance(alts, list) or not alts:
                raise JsonSchemaError(f"{where}.anyOf must be a non-empty list")
            n.any_of = [self._compile(a, f"{where}.anyOf[{i}]") for i, a in enumerate(alts)]
            return idx
        if "const" in schema or "enum" in schema:
            values = [schema["const"]] if "const" in schema else schema["enum"]
            if not isinstance(values, list) or not values:
                raise JsonSchemaError(f"{where}.enum must be a non-empty list")
            n.literals = frozenset(json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode() for v in values)
            return idx
        self._compile_type(n, schema, where)
        self._compile_object(n, schema, where)
        self._compile_array(n, schema, where)
        self._compile_string(n, idx, schema, where)
        return idx

    def _compile_type(self, n: SchemaNode, schema: dict[str, Any], where: str) -> None:
        t = schema.get("type")
        if t is not None:
            names = t if isinstance(t, list) else [t]
            bits = 0
            for name in names:
                if name not in _TYPE_BITS:
                    raise JsonSchemaError(f"{where}.type {name!r} is not a JSON Schema type")
                bits |= _TYPE_BITS[name]
            n.types = bits

    def _compile_object(self, n: SchemaNode, schema: dict[str, Any], where: str) -> None:
        """``properties``, ``required`` and ``additionalProperties``."""
        props = schema.get("properties")
        if props is not None:
            if not isinstance(props, dict):
                raise JsonSchemaError(f"{where}.properties must be an object")
            n.props = {k.encode(): self._compile(v, f"{where}.properties.{k}") for k, v in props.items()}
        req = schema.get("required", [])
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise JsonSchemaError(f"{where}.required must be a list of names")
        missing = [r for r in req if r.encode() not in n.props and props is not None]
        if missing:
            raise JsonSchemaError(f"{where}.required names {missing[0]!r}, which is not in properties")
        n.required = frozenset(r.encode() for r in req)
        extra = schema.get("additionalProperties", True)
        if props:
            n.extra = -1  # generated objects hold only their declared properties
        elif extra is False:
            n.extra = -1
        else:
            n.extra = self._compile(extra, f"{where}.additionalProperties")

    def _compile_array(self, n: SchemaNode, schema: dict[str, Any], where: str) -> None:
        items = schema.get("items", True)
        n.items = self._compile(items, f"{where}.items")
        for key in ("minItems", "maxItems"):
            v = schema.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise JsonSchemaError(f"{where}.{key} must be a non-negative integer")
        n.min_items = int(schema.get("minItems", 0))
        n.max_items = int(schema.get("maxItems", -1))

    def _compile_string(self, n: SchemaNode, idx: int, schema: dict[str, Any], where: str) -> None:
        """``minLength``, ``maxLength`` and ``pattern`` (node ``idx`` is ``n``)."""
        for key in ("minLength", "maxLength"):
            v = schema.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 10_000):
                raise JsonSchemaError(f"{where}.{key} must be an integer from 0 to 10000")
        n.min_len = int(schema.get("minLength", 0))
        n.max_len = int(schema.get("maxLength", -1))
        if "pattern" in schema:
            if n.min_len or n.max_len >= 0:
                raise JsonSchemaError(f"{where}: pattern with minLength/maxLength is not supported; "
                                      f"put the length in the pattern")
            if not isinstance(schema["pattern"], str):
                raise JsonSchemaError(f"{where}.pattern must be a string")
            n.pattern = Regex(schema["pattern"])
            self.pattern_ids[idx] = len(self.patterns)
            self.patterns.append(n.pattern)

    # -------------------------------------------------------------- matching
    def step(self, state: State, c: int) -> State:
        """The state after byte ``c`` (empty: the byte cannot continue the document)."""
        out: set[Stack] = set()
        for stack in state:
            if stack:
                out.update(self._step(stack, c))
        return frozenset(out)

    def can_end(self, state: State) -> bool:
        """Whether the bytes so far are a whole document."""
        for stack in state:
            if not stack:
                return True
            if len(stack) == 1 and stack[0][0] == K_NUM and stack[0][2] in (N_ZERO, N_INT, N_FRAC, N_EXP):
                return True
        return False

    def can_continue(self, state: State) -> bool:
        return any(len(s) > 0 for s in state)

    def string_room(self, state: State) -> int:
        """Bytes of plain text every alternative accepts from here: -1 unless all are in a
        string body, :data:`UNBOUNDED` when no maxLength applies."""
        room = UNBOUNDED
        for stack in state:
            if not stack:
                return -1
            top = stack[-1]
            if top[0] != K_STR or top[2] != S_BODY or top[4]:
                return -1
            n = self.nodes[top[1]]
            if n.max_len >= 0:
                room = min(room, n.max_len - top[3])
        return room

    def _step(self, stack: Stack, c: int) -> list[Stack]:
        top = stack[-1]
        rest = stack[:-1]
        kind = top[0]
        if kind == K_STR:
            return self._step_string(stack, rest, top, c)
        if kind == K_VALUE:
            if c in _WS:
                return [rest + ((K_VALUE, top[1], 0, 0, top[4] + 1, b"", _EMPTY),)] if top[4] < MAX_WS else []
            return self._start_value(rest, top[1], c)
        if kind == K_OBJ:
            return self._step_object(rest, top, c)
        if kind == K_ARR:
            return self._step_array(rest, top, c)
        if kind == K_NUM:
            return self._step_number(rest, top, c)
        if kind == K_LIT:
            return self._step_literal(rest, top, c)
        return self._step_pattern(rest, top, c)

    def _start_value(self, rest: Stack, node: int, c: int) -> list[Stack]:
        """Stacks after the first byte ``c`` of a value for ``node`` (not whitespace)."""
        n = self.nodes[node]
        if n.any_of:
            out: list[Stack] = []
            for alt in n.any_of:
                out.extend(self._start_value(rest, alt, c))
            return out
        if n.literals is not None:
            return self._step_literal(rest, (K_LIT, node, 0, 0, 0, b"", n.literals), c)
        t = n.types
        if c == 0x7B and t & T_OBJ:  # {
            return [rest + ((K_OBJ, node, O_START, 0, 0, b"", _EMPTY),)]
        if c == 0x5B and t & T_ARR:  # [
            if n.max_items == 0:
                return [rest + ((K_ARR, node, A_AFTER, 0, 0, b"", _EMPTY),)]
            return [rest + ((K_ARR, node, A_START, 0, 0, b"", _EMPTY),)]
        if c == 0x22 and t & T_STR:  # "
            if n.pattern is not None:
                pid = self.pattern_ids[node]
                return [rest + ((K_PAT, node, pid, self.patterns[pid].start, 0, b"", _EMPTY),)]
            return [rest + ((K_STR, node, S_BODY, 0, 0, b"", _EMPTY),)]
        if t & T_INT and (c in _DIGITS or c == 0x2D):
            phase = N_MINUS if c == 0x2D else (N_ZERO if c == 0x30 else N_INT)
            return [rest + ((K_NUM, node, phase, 1, 0, b"", _EMPTY),)]
        if c == 0x74 and t & T_BOOL:
            return [rest + ((K_LIT, node, 1, 0, 0, b"", frozenset({b"true"})),)]
        if c == 0x66 and t & T_BOOL:
            return [rest + ((K_LIT, node, 1, 0, 0, b"", frozenset({b"false"})),)]
        if c == 0x6E and t & T_NULL:
            return [rest + ((K_LIT, node, 1, 0, 0, b"", frozenset({b"null"})),)]
        return []

    def _step_literal(self, rest: Stack, top: Frame, c: int) -> list[Stack]:
        pos = top[2]
        nxt = frozenset(x for x in top[6] if len(x) > pos and x[pos] == c)
        out: list[Stack] = []
        if any(len(x) == pos + 1 for x in nxt):
            out.append(rest)
        longer = frozenset(x for x in nxt if len(x) > pos + 1)
        if longer:
            out.append(rest + ((K_LIT, top[1], pos + 1, 0, 0, b"", longer),))
        return out

    def _step_string(self, stack: Stack, rest: Stack, top: Frame, c: int) -> list[Stack]:
        phase = top[2]
        count = top[3]
        if phase == S_BODY:
            follow = top[4]  # continuation bytes the current UTF-8 character still needs
            if follow:
                if (c & 0xC0) != 0x80:
                    return []
                return [rest + ((K_STR, top[1], S_BODY, count, follow - 1, b"", _EMPTY),)]
            n = self.nodes[top[1]]
            if c == 0x22:
                return [rest] if count >= n.min_len else []
            if c < 0x20 or 0x80 <= c < 0xC2 or c > 0xF4:  # control, stray continuation, invalid lead
                return []
            follow = 0 if c < 0x80 else (1 if c < 0xE0 else (2 if c < 0xF0 else 3))
            if n.min_len or n.max_len >= 0:  # a character starts here
                count += 1
                if 0 <= n.max_len < count:
                    return []
            if c == 0x5C:
                return [rest + ((K_STR, top[1], S_ESC, count, 0, b"", _EMPTY),)]
            if count == top[3] and not follow:
                return [stack]
            return [rest + ((K_STR, top[1], S_BODY, count, follow, b"", _EMPTY),)]
        if phase == S_ESC:
            if c not in _ESCAPES:
                return []
            return [rest + ((K_STR, top[1], S_HEX1 if c == 0x75 else S_BODY, count, 0, b"", _EMPTY),)]
        if c not in _HEX:
            return []
        return [rest + ((K_STR, top[1], S_BODY if phase == S_HEX4 else phase + 1, count, 0, b"", _EMPTY),)]

    def _step_pattern(self, rest: Stack, top: Frame, c: int) -> list[Stack]:
        """A string whose value must match a pattern (no escapes inside it). The frame's
        phase is the pattern, its count the NFA state set, its bytes a partial character."""
        rx = self.patterns[top[2]]
        if c == 0x22 and not top[5]:
            return [rest] if rx.accepts(top[3]) else []
        if c == 0x5C or c < 0x20:
            return []
        pending = top[5] + bytes([c])
        try:
            ch = pending.decode("utf-8")
        except UnicodeDecodeError as err:
            # A character's first bytes: only where the pattern can take some non-ASCII character.
            if err.reason == "unexpected end of data" and len(pending) < 4 and rx.takes_non_ascii(top[3]):
                return [rest + ((K_PAT, top[1], top[2], top[3], 0, pending, _EMPTY),)]
            return []
        nxt = rx.step(top[3], ch)
        if nxt < 0:
            return []
        return [rest + ((K_PAT, top[1], top[2], nxt, 0, b"", _EMPTY),)]

    def _step_number(self, rest: Stack, top: Frame, c: int) -> list[Stack]:
        phase = top[2]
        integer = not (self.nodes[top[1]].types & T_NUM)
        nxt = -1
        if c in _DIGITS:
            if phase == N_MINUS:
                nxt = N_ZERO if c == 0x30 else N_INT
            elif phase in (N_INT, N_FRAC, N_EXP):
                nxt = phase
            elif phase == N_DOT:
                nxt = N_FRAC
            elif phase in (N_E, N_ESIGN):
                nxt = N_EXP
        elif c == 0x2E and phase in (N_ZERO, N_INT) and not integer:
            nxt = N_DOT
        elif c in (0x65, 0x45) and phase in (N_ZERO, N_INT, N_FRAC) and not integer:
            nxt = N_E
        elif c in (0x2B, 0x2D) and phase == N_E:
            nxt = N_ESIGN
        if nxt >= 0:
            if top[3] >= MAX_NUMBER_BYTES:
                return []
            return [rest + ((K_NUM, top[1], nxt, top[3] + 1, 0, b"", _EMPTY),)]
        if phase in (N_ZERO, N_INT, N_FRAC, N_EXP) and rest:
            return self._step(rest, c)  # the number ended; the byte belongs to the container
        return []

    def _step_object(self, rest: Stack, top: Frame, c: int) -> list[Stack]:
        _k, node, phase, _count, ws, key, seen = top
        n = self.nodes[node]
        if phase == O_KEY:
            if not n.props:  # free-form keys are plain strings
                return []
            if c == 0x22:
                if key in n.props and key not in seen:
                    return [rest + ((K_OBJ, node, O_COLON, 0, 0, key, seen),)]
                return []
            longer = key + bytes([c])
            if any(p.startswith(longer) for p in n.props if p not in seen):
                return [rest + ((K_OBJ, node, O_KEY, 0, 0, longer, seen),)]
            return []
        if c in _WS:
            return [rest + ((K_OBJ, node, phase, 0, ws + 1, key, seen),)] if ws < MAX_WS else []
        if phase == O_COLON:
            if c != 0x3A:
                return []
            value = n.props[key] if n.props else n.extra
            after = (K_OBJ, node, O_AFTER, 0, 0, b"", seen | {key} if n.props else seen)
            return [rest + (after, (K_VALUE, value, 0, 0, 0, b"", _EMPTY))]
        if c == 0x7D and phase in (O_START, O_AFTER):  # }
            return [rest] if n.required <= seen else []
        if c == 0x2C and phase == O_AFTER:  # ,
            if n.props and all(p in seen for p in n.props):
                return []
            return [rest + ((K_OBJ, node, O_COMMA, 0, 0, b"", seen),)]
        if c == 0x22 and phase in (O_START, O_COMMA):
            if n.props:
                return [rest + ((K_OBJ, node, O_KEY, 0, 0, b"", seen),)]
            if n.extra < 0:
                return []
            return [rest + ((K_OBJ, node, O_COLON, 0, 0, b"", seen), (K_STR, node, S_BODY, 0, 0, b"", _EMPTY))]
        return []

    def _step_array(self, rest: Stack, top: Frame, c: int) -> list[Stack]:
        _k, node, phase, count, ws, _b, _s = top
        n = self.nodes[node]
        if c in _WS:
            return [rest + ((K_ARR, node, phase, count, ws + 1, b"", _EMPTY),)] if ws < MAX_WS else []
        bounded = n.min_items > 0 or n.max_items >= 0
        if phase == A_AFTER or (phase == A_START and c == 0x5D):
            if c == 0x5D:  # ]
                return [rest] if count >= n.min_items else []
            if c == 0x2C and phase == A_AFTER and (n.max_items < 0 or count < n.max_items):
                return [rest + ((K_ARR, node, A_COMMA, count, 0, b"", _EMPTY),)]
            return []
        after = (K_ARR, node, A_AFTER, count + 1 if bounded else 0, 0, b"", _EMPTY)
        return self._start_value(rest + (after,), n.items, c)


# ----------------------------------------------------------------------------- token trie

class TokenTrie:
    """The vocabulary's byte strings as a trie over their sorted order.

    Node ``i`` covers the sorted positions ``lo[i]:hi[i]``; tokens ending exactly there are
    ``lo[i]:term[i]``. ``plain[i]`` says no byte below the node is a quote, backslash or
    control byte and every token below is whole UTF-8 characters (a string body between
    characters accepts the whole subtree).
    """

    def __init__(self, token_bytes: list[bytes]) -> None:
        n = len(token_bytes)
        order = sorted(range(n), key=lambda t: token_bytes[t])
        self.n_vocab = n
        self.sorted_ids: I32 = np.asarray(order, dtype=np.int32)
        self.children: list[dict[int, int]] = [{}]
        self.lo: list[int] = [0]
        self.hi: list[int] = [n]
        self.term: list[int] = [0]
        self.edge: list[int] = [0]
        path: list[int] = [0]
        prev = b""
        for pos in range(n):
            b = token_bytes[order[pos]]
            k = 0
            m = min(len(b), len(prev))
            while k < m and b[k] == prev[k]:
                k += 1
            for d in range(len(path) - 1, k, -1):
                self.hi[path[d]] = pos
            del path[k + 1:]
            for d in range(k, len(b)):
                node = len(self.lo)
                self.children.append({})
                self.lo.append(pos)
                self.hi.append(n)
                self.term.append(pos)
                self.edge.append(b[d])
                self.children[path[d]][b[d]] = node
                path.append(node)
            self.term[path[len(b)]] = pos + 1
            prev = b
        plain = [True] * len(self.lo)
        # A token is clean when its bytes are whole UTF-8 characters (the last may be unfinished).
        clean = [_utf8_clean(token_bytes[t]) for t in order]
        for node in range(len(self.lo) - 1, -1, -1):
            if not all(clean[self.lo[node]:self.term[node]]):
                plain[node] = False
            for byte, child in self.children[node].items():
                if byte == 0x22 or byte == 0x5C or byte < 0x20 or not plain[child]:
                    plain[node] = False
        self.plain = plain
        # Characters of each token (UTF-8 lead bytes), in sorted order, and of each node's prefix.
        self.chars_sorted: I32 = np.asarray([sum(1 for c in token_bytes[t] if (c & 0xC0) != 0x80) for t in order],
                                            dtype=np.int32)
        self.prefix_chars = [0] * len(self.lo)
        for node in range(len(self.lo)):
            for byte, child in self.children[node].items():
                self.prefix_chars[child] = self.prefix_chars[node] + (1 if (byte & 0xC0) != 0x80 else 0)


def _utf8_clean(data: bytes) -> bool:
    follow = 0
    for c in data:
        if follow:
            if (c & 0xC0) != 0x80:
                return False
            follow -= 1
        elif c >= 0x80:
            if c < 0xC2 or c > 0xF4:
                return False
            follow = 1 if c < 0xE0 else (2 if c < 0xF0 else 3)
    return True


_TRIES: dict[int, tuple[object, TokenTrie]] = {}


def trie_for(tokenizer: Any) -> TokenTrie:
    """The (cached) trie of a tokenizer's vocabulary; control tokens have no bytes."""
    hit = _TRIES.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    n = int(tokenizer.n_vocab)
    trie = TokenTrie([tokenizer.token_bytes(t) for t in range(n)])
    _TRIES[id(tokenizer)] = (tokenizer, trie)
    return trie


class MaskCache:
    """Per-state masks of one grammar over one vocabulary, shared by every generation."""

    def __init__(self, grammar: Grammar, trie: TokenTrie, eog_ids: list[int]) -> None:
        self.grammar = grammar
        self.trie = trie
        self.eog: I32 = np.asarray(sorted(eog_ids), dtype=np.int32)
        self.masks: dict[State, tuple[bool, I32]] = {}
        self.misses = 0
        self.walked_nodes = 0
        self.seconds = 0.0  # spent in the sampler's calls, all generations (the overhead benchmark reads it)
        self.applied = 0

    def mask(self, state: State) -> tuple[bool, I32]:
        """(True, allowed ids) or (False, refused ids), whichever is shorter."""
        hit = self.masks.get(state)
        if hit is not None:
            return hit
        self.misses += 1
        allowed = self._walk(state)
        if self.grammar.can_end(state) and self.eog.shape[0]:
            allowed[self.eog] = True
        if not allowed.any() and self.eog.shape[0]:
            allowed[self.eog] = True  # nothing fits (should not happen): end rather than loop
        ids = np.flatnonzero(allowed).astype(np.int32)
        if ids.shape[0] * 2 <= allowed.shape[0]:
            entry = (True, ids)
        else:
            entry = (False, np.flatnonzero(~allowed).astype(np.int32))
        if len(self.masks) >= MAX_CACHED_STATES:
            self.masks.clear()
        self.masks[state] = entry
        return entry

    def _walk(self, state: State) -> npt.NDArray[np.bool_]:
        trie = self.trie
        g = self.grammar
        ok_sorted = np.zeros(trie.n_vocab, dtype=np.bool_)
        todo: list[tuple[int, State]] = []
        if g.can_continue(state):
            for byte, child in trie.children[0].items():
                nxt = g.step(state, byte)
                if nxt:
                    todo.append((child, nxt))
        visited = 0
        while todo:
            node, st = todo.pop()
            visited += 1
            room = g.string_room(st) if trie.plain[node] else -1
            if room >= UNBOUNDED:
                ok_sorted[trie.lo[node]:trie.hi[node]] = True  # plain text: the whole subtree
                continue
            if room >= 0:  # plain text within maxLength: the tokens short enough
                lo, hi = trie.lo[node], trie.hi[node]
                ok_sorted[lo:hi] |= trie.chars_sorted[lo:hi] - trie.prefix_chars[node] <= room
                continue
            if trie.term[node] > trie.lo[node]:
                ok_sorted[trie.lo[node]:trie.term[node]] = True
            for byte, child in trie.children[node].items():
                nxt = g.step(st, byte)
                if nxt:
                    todo.append((child, nxt))
        self.walked_nodes += visited
        out = np.zeros(trie.n_vocab, dtype=np.bool_)
        out[trie.sorted_ids[ok_sorted]] = True
        return out


class JsonConstraint(TokenConstraint):
    """One generation's constraint: the matcher state, advanced token by token."""

    def __init__(self, cache: MaskCache, token_bytes: list[bytes]) -> None:
        self.cache = cache
        self.grammar = cache.grammar
        self.state: State = cache.grammar.start
        self.eog = frozenset(int(i) for i in cache.eog)
        self._bytes = token_bytes
        # The token allows() last checked and the state it leads to: accept() of the same
        # token (the usual next call) reuses it instead of stepping the grammar again.
        self._checked = -1
        self._checked_state: State = frozenset()

    def fresh(self) -> "JsonConstraint":
        return JsonConstraint(self.cache, self._bytes)

    def _advance(self, tid: int) -> State:
        st = self.state
        if tid in self.eog:
            return st if self.grammar.can_end(st) else frozenset()
        data = self._bytes[tid] if 0 <= tid < len(self._bytes) else b""
        if not data:
            return frozenset()
        for c in data:
            st = self.grammar.step(st, c)
            if not st:
                return st
        return st

    def allows(self, tid: int) -> bool:
        t0 = time.perf_counter()
        st = self._advance(tid)
        self._checked, self._checked_state = tid, st
        self.cache.seconds += time.perf_counter() - t0
        return bool(st)

    def accept(self, tid: int) -> None:
        t0 = time.perf_counter()
        st = self._checked_state if tid == self._checked else self._advance(tid)
        self._checked = -1
        if st:
            self.state = st
        self.cache.seconds += time.perf_counter() - t0

    def apply(self, logits: F32) -> F32:
        t0 = time.perf_counter()
        allowed, ids = self.cache.mask(self.state)
        if allowed:
            out = np.full(logits.shape, -np.inf, dtype=np.float32)
            out[ids] = logits[ids]
        else:
            out = logits.copy()
            out[ids] = -np.inf
        self.cache.seconds += time.perf_counter() - t0
        self.cache.applied += 1
        return out

    def done(self) -> bool:
        return self.grammar.can_end(self.state)


class ConstraintFactory:
    """A compiled schema bound to a model's vocabulary; ``new()`` starts a generation."""

    def __init__(self, schema: Any, tokenizer: Any, eog_ids: list[int]) -> None:
        self.grammar = Grammar(schema)
        trie = trie_for(tokenizer)
        self.token_bytes = [tokenizer.token_bytes(t) for t in range(trie.n_vocab)]
        self.cache = MaskCache(self.grammar, trie, eog_ids)

    def new(self) -> JsonConstraint:
        return JsonConstraint(self.cache, self.token_bytes)


def check_schema(schema: Any) -> None:
    """Raise :class:`JsonSchemaError` when ``schema`` cannot be enforced."""
    Grammar(schema)
