"""Unpickling untrusted ``.bin`` files: no code runs, and no crafted pickle exhausts the process.

Two steps. A scan of the opcodes (:mod:`pickletools`, nothing is built) refuses, before the
real unpickler allocates anything, opcodes a ``.bin`` never needs, memo indices far beyond the
entries written so far (the C unpickler sizes its memo by the index), frames longer than the
data, and containers nested deeper than :data:`MAX_DEPTH`. Then a restricted unpickler builds
only bytes, str, lists, tuples, dicts, booleans and numbers. Every failure is a one-line
``ValueError`` naming the source.
"""
from __future__ import annotations

import io
import pickle
import pickletools

#: nesting depth allowed (a .bin is a tuple of two lists of bytes/bools: depth 2)
MAX_DEPTH = 16
#: a memo index may run ahead of the entries written so far by at most this much
MEMO_SLACK = 1024
# Python 3 pickles bytes with protocol <= 2 as _codecs.encode(str, "latin1"); nothing else is allowed.
_ALLOWED_GLOBALS = {("_codecs", "encode")}
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


def scan_pickle(data: bytes) -> None:
    """Raise ``ValueError`` (without the source) when ``data`` is not a plain, bounded pickle."""
    scan, puts = _Scan(), 0
    for op, arg, pos in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name not in _KNOWN:
            raise ValueError(f"refused pickle opcode {name} at byte {pos} (a .bin holds only "
                             "encoded image bytes and booleans)")
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
        elif name in _ATOMS:
            scan.stack.append(None)
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
        elif name == "REDUCE":   # only _codecs.encode(str, "latin1") gets past the unpickler: bytes
            scan.pop(2)
            scan.stack.append(None)
        elif name == "APPEND":
            scan.add_to_top(scan.pop())
        elif name == "SETITEM":
            scan.add_to_top(scan.pop(2))
        elif name == "STOP":
            if len(scan.stack) != 1:
                raise ValueError("stack does not end with one object")
            if scan.depth(scan.stack[0]) > MAX_DEPTH:
                raise ValueError(f"containers nested deeper than {MAX_DEPTH} levels (or in a cycle)")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle, source: str):
        super().__init__(handle, encoding="bytes")
        self._source = source

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return self._latin1_encode
        raise pickle.UnpicklingError(
            f"{self._source}: refused to load global {module}.{name} (a .bin file may contain only "
            "encoded image bytes and booleans)"
        )

    def _latin1_encode(self, text, encoding="utf-8", *rest):
        """``_codecs.encode`` limited to what pickle uses for bytes: (str, 'latin1')."""
        if not isinstance(text, str) or not isinstance(encoding, str) or rest or \
                encoding.replace("-", "").lower() != "latin1":
            raise pickle.UnpicklingError(f"{self._source}: refused _codecs.encode call other than (str, 'latin1')")
        return text.encode("latin1")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"{self._source}: refused persistent id in pickle")


def safe_unpickle(data: bytes, source: str = "pickle"):
    """Unpickle ``data`` allowing only plain containers, bytes and booleans; never runs other
    globals and never lets a crafted pickle exhaust memory or the interpreter's stack."""
    try:
        scan_pickle(data)
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except pickle.UnpicklingError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(source) else f"{source}: {message}") from None
    except (ValueError, EOFError, TypeError, IndexError, KeyError, AttributeError, OverflowError,
            MemoryError, RecursionError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{source}: not a valid .bin pickle ({detail[:200]})") from None
