"""Unpickling untrusted files (``.bin`` sets, ``.pth`` state dicts): no code runs, and no crafted
pickle exhausts the process.

Two steps. A scan of the opcodes (:mod:`pickletools`, nothing is built) refuses, before the
real unpickler allocates anything, opcodes the format never needs, globals off the caller's
allow-list, memo indices far beyond the entries written so far (the C unpickler sizes its memo
by the index), frames longer than the data, and containers nested deeper than
:data:`MAX_DEPTH`. Then a restricted unpickler builds only plain containers, str, bytes,
booleans and numbers, plus what the caller's allow-list (``allowed``: ``(module, name) →
callable``) and ``persistent_load`` build. By default (``.bin`` files) the one global is
``_codecs.encode(str, "latin1")``, which Python 3 uses to pickle bytes. Every failure is a
one-line ``ValueError`` naming the source.
"""
from __future__ import annotations

import io
import pickle
import pickletools

#: nesting depth allowed (a .bin is a tuple of two lists of bytes/bools: depth 2)
MAX_DEPTH = 16
#: a memo index may run ahead of the entries written so far by at most this much
MEMO_SLACK = 1024
#: what a .bin holds (said when something else is refused)
BIN_HOLDS = "a .bin holds only encoded image bytes and booleans"
_ATOMS = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "NONE", "NEWTRUE",
    "NEWFALSE", "GLOBAL",
}
_EMPTY = {"EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET"}
_FROM_MARK = {"LIST", "TUPLE", "DICT", "FROZENSET"}            # build a new container
_ADD_FROM_MARK = {"APPENDS", "SETITEMS", "ADDITEMS"}           # add to the container below the mark
_TUPLE_N = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_PUT = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_GET = {"GET", "BINGET", "LONG_BINGET"}
_CONTROL = {"PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "STACK_GLOBAL", "REDUCE",
            "APPEND", "SETITEM"}
_KNOWN = _ATOMS | _EMPTY | _FROM_MARK | _ADD_FROM_MARK | set(_TUPLE_N) | _PUT | _GET | _CONTROL
#: opcodes a caller may add: persistent ids (with its ``persistent_load``) and BUILD (setting an
#: allowed object's state, e.g. the ``_metadata`` of a torch state dict)
OPTIONAL_OPCODES = {"PERSID", "BINPERSID", "BUILD"}


class _Scan:
    """An abstract run of the pickle machine: stack entries are container ids (or None for
    atoms); ``children`` records which container holds which, to measure nesting at the end."""

    def __init__(self):
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict = {}
        self.children: list[set] = []

    def new(self, items=()) -> int:
        self.children.append({i for i in items if i is not None})
        return len(self.children) - 1

    def pop_mark(self) -> list:
        if not self.marks:
            raise ValueError("MARK missing")
        start = self.marks.pop()
        items, self.stack[start:] = self.stack[start:], []
        return items

    def pop(self, n: int = 1) -> list:
        if len(self.stack) < n:
            raise ValueError("stack underflow")
        items, self.stack[-n:] = self.stack[-n:], []
        return items

    def add_to_top(self, items) -> None:
        if not self.stack or self.stack[-1] is None:
            raise ValueError("adding items to something that is not a container")
        self.children[self.stack[-1]].update(i for i in items if i is not None)

    def depth(self, root) -> int:
        """Longest chain of containers below ``root``; a cycle counts as too deep."""
        if root is None:
            return 0
        best, done, path = 0, {}, set()
        todo = [(root, iter(self.children[root]))]
        path.add(root)
        while todo:
            node, kids = todo[-1]
            kid = next(kids, None)
            if kid is None:
                todo.pop()
                path.discard(node)
                done[node] = 1 + max((done[k] for k in self.children[node]), default=0)
                best = max(best, done[node])
                continue
            if kid in path or len(todo) > MAX_DEPTH:
                return MAX_DEPTH + 1
            if kid not in done:
                path.add(kid)
                todo.append((kid, iter(self.children[kid])))
        return best


def scan_pickle(data: bytes, allowed=None, opcodes=(), holds: str = BIN_HOLDS) -> None:
    """Raise ``ValueError`` (without the source) when ``data`` is not a plain, bounded pickle
    whose ``GLOBAL``s are in ``allowed`` (``(module, name)`` pairs; default ``.bin``'s) and
    whose opcodes are plain ones or in ``opcodes`` (from :data:`OPTIONAL_OPCODES`)."""
    allowed = BIN_GLOBALS if allowed is None else allowed
    known = _KNOWN | (set(opcodes) & OPTIONAL_OPCODES)
    scan, puts = _Scan(), 0
    for op, arg, pos in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name not in known:
            raise ValueError(f"refused pickle opcode {name} at byte {pos} ({holds})")
        if name == "GLOBAL" and tuple(arg.split(" ", 1)) not in allowed:
            raise ValueError(f"refused to load global {arg.replace(' ', '.')} ({holds})")
        if name == "FRAME" and arg > len(data) - pos:
            raise ValueError(f"frame of {arg} bytes at byte {pos} runs past the end of the data")
        if name in _PUT:
            index = len(scan.memo) if name == "MEMOIZE" else arg
            if index > puts + MEMO_SLACK:
                raise ValueError(f"memo index {index} at byte {pos} is far beyond the {puts} entries written")
            puts += 1
            if not scan.stack:
                raise ValueError("memo of an empty stack")
            scan.memo[index] = scan.stack[-1]
        elif name in _GET:
            if arg not in scan.memo:
                raise ValueError(f"memo entry {arg} read before it was written (byte {pos})")
            scan.stack.append(scan.memo[arg])
        elif name in _ATOMS or name == "PERSID":
            scan.stack.append(None)
        elif name == "BINPERSID":
            scan.stack.append(scan.new(scan.pop()))
        elif name == "BUILD":
            scan.add_to_top(scan.pop())
        elif name in _EMPTY:
            scan.stack.append(scan.new())
        elif name in _FROM_MARK:
            scan.stack.append(scan.new(scan.pop_mark()))
        elif name in _ADD_FROM_MARK:
            scan.add_to_top(scan.pop_mark())
        elif name in _TUPLE_N:
            scan.stack.append(scan.new(scan.pop(_TUPLE_N[name])))
        elif name == "MARK":
            scan.marks.append(len(scan.stack))
        elif name == "POP":
            scan.pop_mark() if scan.marks and scan.marks[-1] == len(scan.stack) else scan.pop()
        elif name == "POP_MARK":
            scan.pop_mark()
        elif name == "DUP":
            scan.stack.extend(scan.pop() * 2)
        elif name == "STACK_GLOBAL":
            scan.pop(2)
            scan.stack.append(None)
        elif name == "REDUCE":   # an allowed global's result: may hold its arguments
            scan.stack.append(scan.new(scan.pop(2)))
        elif name == "APPEND":
            scan.add_to_top(scan.pop())
        elif name == "SETITEM":
            scan.add_to_top(scan.pop(2))
        elif name == "STOP":
            if len(scan.stack) != 1:
                raise ValueError("stack does not end with one object")
            if scan.depth(scan.stack[0]) > MAX_DEPTH:
                raise ValueError(f"containers nested deeper than {MAX_DEPTH} levels (or in a cycle)")


def _latin1_encode(text, encoding="utf-8", *rest):
    """``_codecs.encode`` limited to what pickle uses for bytes: (str, 'latin1')."""
    if not isinstance(text, str) or not isinstance(encoding, str) or rest or \
            encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError("refused _codecs.encode call other than (str, 'latin1')")
    return text.encode("latin1")


# Python 3 pickles bytes with protocol <= 2 as _codecs.encode(str, "latin1"); nothing else is allowed.
BIN_GLOBALS = {("_codecs", "encode"): _latin1_encode}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle, allowed, persistent_load, holds):
        super().__init__(handle, encoding="bytes")
        self._allowed, self._persistent_load, self._holds = allowed, persistent_load, holds

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise pickle.UnpicklingError(f"refused to load global {module}.{name} ({self._holds})")

    def persistent_load(self, pid):
        if self._persistent_load is None:
            raise pickle.UnpicklingError("refused persistent id in pickle")
        return self._persistent_load(pid)


def safe_unpickle(data: bytes, source: str = "pickle", *, allowed=None, persistent_load=None,
                  opcodes=(), holds: str = BIN_HOLDS, kind: str = ".bin pickle"):
    """Unpickle ``data`` allowing only plain containers, str, bytes, booleans and numbers, the
    globals in ``allowed`` (``{(module, name): callable}``; default: ``.bin``'s bytes codec) and
    the opcodes in ``opcodes``; ``persistent_load(pid)`` resolves persistent ids (refused
    without it). Never runs other globals and never lets a crafted pickle exhaust memory or the
    interpreter's stack; every failure is one ``ValueError`` line starting with ``source``."""
    allowed = BIN_GLOBALS if allowed is None else dict(allowed)
    try:
        scan_pickle(data, allowed, opcodes, holds)
        return _RestrictedUnpickler(io.BytesIO(data), allowed, persistent_load, holds).load()
    except pickle.UnpicklingError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(source) else f"{source}: {message}") from None
    except (ValueError, EOFError, TypeError, IndexError, KeyError, AttributeError, OverflowError,
            MemoryError, RecursionError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if detail.startswith(source):
            raise ValueError(detail) from None
        if isinstance(exc, ValueError) and detail.startswith("refused"):
            raise ValueError(f"{source}: {detail}") from None
        raise ValueError(f"{source}: not a valid {kind} ({detail[:200]})") from None
