"""InsightFace .bin reading (restricted unpickler, structural checks), make_bin and LFW pairs.txt."""
from __future__ import annotations

import builtins
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from distill.data.images import decode_image_bytes
from distill.evals import bins as B
from distill.evals import pairs as P

ORL = Path(__file__).resolve().parents[1] / "distill" / "demo_data" / "orl_faces"


def orl_bytes(person, image):
    return (ORL / f"s{person}" / f"{image}.png").read_bytes()


def write_pickle(path, obj, protocol=4):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


class _Exec:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (builtins.exec, (self.code,))


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("payload", ["exec", "system"])
def test_restricted_unpickler_refuses_globals_without_running_them(tmp_path, payload):
    marker = tmp_path / "pwned.txt"
    evil = _Exec(f"open({str(marker)!r}, 'w').write('x')") if payload == "exec" else _System(f"touch {marker}")
    path = write_pickle(tmp_path / "evil.bin", ([evil, orl_bytes(1, 1)], [True]), protocol=2)
    with pytest.raises(ValueError) as info:
        B.read_bin(path)
    message = str(info.value)
    assert str(path) in message and "refused" in message
    assert ("builtin__.exec" in message) if payload == "exec" else (".system" in message)
    assert not marker.exists()


def test_codecs_encode_only_for_latin1_strings(tmp_path):
    path = tmp_path / "codec.bin"  # _codecs.encode(b"x", "zlib_codec") must not run
    path.write_bytes(b"\x80\x02c_codecs\nencode\nq\x00C\x01xX\n\x00\x00\x00zlib_codec\x86R.")
    with pytest.raises(ValueError, match=r"codec.bin: refused _codecs.encode"):
        B.read_bin(path)


def test_python2_and_protocol2_pickles_load(tmp_path):
    a, b = orl_bytes(1, 1), orl_bytes(1, 2)
    # Python 3 protocol 2 pickles bytes via _codecs.encode(str, 'latin1')
    path = write_pickle(tmp_path / "p2.bin", ([a, b], [True]), protocol=2)
    assert b"_codecs" in path.read_bytes()
    encoded, issame = B.read_bin(path)
    assert encoded == [a, b] and issame.tolist() == [True]
    # a Python 2 pickle: images as BINSTRING ("str"), read with encoding='bytes'
    body = b"".join(b"T" + struct.pack("<I", len(x)) + x for x in (a, b))
    py2 = b"\x80\x02(](" + body + b"e](\x88e" + b"t."
    (tmp_path / "py2.bin").write_bytes(py2)
    encoded, issame = B.read_bin(tmp_path / "py2.bin")
    assert encoded == [a, b] and issame.tolist() == [True]


def test_structural_errors_name_file_and_index(tmp_path):
    img = orl_bytes(2, 1)
    cases = {
        "odd.bin": (([img] * 3, [True]), "odd number of images"),
        "count.bin": (([img] * 4, [True]), "1 issame labels for 4 images"),
        "label.bin": (([img] * 4, [True, 1]), r"issame\[1\] is int"),
        "item.bin": (([img, "text"], [True]), "image 1 is str"),
        "shape.bin": ({"a": 1}, "expected a pickled"),
    }
    for name, (obj, pattern) in cases.items():
        path = write_pickle(tmp_path / name, obj)
        with pytest.raises(ValueError, match=pattern) as info:
            B.read_bin(path)
        assert str(path) in str(info.value)
    (tmp_path / "junk.bin").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="junk.bin"):
        B.read_bin(tmp_path / "junk.bin")
    bad = write_pickle(tmp_path / "broken.bin", ([img, img, img, b"garbage"], [True, False]))
    with pytest.raises(ValueError, match=r"broken.bin: image 3: cannot decode"):
        B.load_bin(bad)


def test_make_bin_round_trip_on_orl(tmp_path):
    out = B.make_bin(ORL, tmp_path / "sub" / "orl.bin", n_pairs=60, seed=3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["orl.bin"]  # no temp file left behind
    vset = B.load_bin(out)
    assert vset.name == "orl"
    assert vset.images.shape == (120, 112, 112, 3) and vset.images.dtype == np.uint8
    assert vset.issame.dtype == bool and vset.issame.sum() == 30
    owner = {}
    for folder in sorted(ORL.iterdir()):
        for f in folder.glob("*.png"):
            owner[f.read_bytes()] = (folder.name, f.name)
    encoded, issame = B.read_bin(out)
    keys = [owner[x] for x in encoded]  # stores the original file bytes
    for i, same in enumerate(issame):
        a, b = keys[2 * i], keys[2 * i + 1]
        assert a != b and (a[0] == b[0]) == same
    assert len({(keys[2 * i], keys[2 * i + 1]) for i in range(30)}) == 30  # pairs are distinct
    np.testing.assert_array_equal(vset.images[5], decode_image_bytes(encoded[5]))
    again = B.make_bin(ORL, tmp_path / "again.bin", n_pairs=60, seed=3)
    assert again.read_bytes() == out.read_bytes()
    other = B.make_bin(ORL, tmp_path / "other.bin", n_pairs=60, seed=4)
    assert other.read_bytes() != out.read_bytes()


def test_sample_pairs_balanced_distinct_and_errors():
    labels = np.repeat(np.arange(3), [2, 2, 1])  # 2 same pairs, 8 different pairs possible
    pairs = B.sample_pairs(labels, 4, seed=0)
    assert sum(s for *_, s in pairs) == 2
    assert all((labels[a] == labels[b]) == s and a < b for a, b, s in pairs)
    with pytest.raises(ValueError, match="only 2 exist"):
        B.sample_pairs(labels, 6)
    with pytest.raises(ValueError, match="even"):
        B.sample_pairs(labels, 3)
    big = np.repeat(np.arange(1000), 3)  # 3000 images: rejection sampling path
    pairs = B.sample_pairs(big, 400, seed=1)
    assert len({(a, b) for a, b, _ in pairs}) == 400 and sum(s for *_, s in pairs) == 200
    assert all((big[a] == big[b]) == s for a, b, s in pairs)


def test_make_bin_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        B.make_bin(tmp_path / "missing", tmp_path / "x.bin")
    (tmp_path / "tree" / "a").mkdir(parents=True)
    (tmp_path / "tree" / "a" / "1.png").write_bytes(orl_bytes(1, 1))
    (tmp_path / "tree" / "a" / "2.png").write_bytes(b"broken")
    (tmp_path / "tree" / "b").mkdir()
    (tmp_path / "tree" / "b" / "1.png").write_bytes(orl_bytes(2, 1))
    with pytest.raises(ValueError, match=r"a/2.png: cannot decode"):
        B.make_bin(tmp_path / "tree", tmp_path / "x.bin", n_pairs=2)
    assert not (tmp_path / "x.bin").exists()


def lfw_tree(root: Path):
    """An LFW-style tree (DIR/name/name_%04d.jpg) with ORL bytes for persons 1-3."""
    for person in (1, 2, 3):
        folder = root / f"P{person}"
        folder.mkdir(parents=True)
        for image in (1, 2, 3):
            (folder / f"P{person}_{image:04d}.jpg").write_bytes(orl_bytes(person, image))
    return root


PAIRS = """2\t2
P1\t1\t2
P2\t1\t3
P1\t1\tP2\t2
P3\t3\tP1\t2
P3\t1\t2
P2\t2\t3
P3\t2\tP2\t1
P1\t3\tP3\t1
"""


def test_pairs_file_to_set_and_bin(tmp_path):
    images = lfw_tree(tmp_path / "lfw")
    (tmp_path / "pairs.txt").write_text(PAIRS)
    pairs = P.read_pairs(tmp_path / "pairs.txt")
    assert len(pairs) == 8 and pairs[2] == P.Pair("P1", 1, "P2", 2, False, 4)
    vset = P.load_pairs_set(tmp_path / "pairs.txt", images)
    assert vset.name == "lfw" and vset.issame.tolist() == [True, True, False, False] * 2
    np.testing.assert_array_equal(vset.images[5], decode_image_bytes(orl_bytes(2, 2)))
    out = P.pairs_to_bin(tmp_path / "pairs.txt", images, tmp_path / "lfw.bin")
    encoded, issame = B.read_bin(out)
    assert encoded[6] == orl_bytes(3, 3) and issame.tolist() == vset.issame.tolist()


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("x y\n", r"pairs.txt:1: expected a header"),
        ("1 1\nP1 1\nP1 1 P2 1\n", r"pairs.txt:2: expected 'name i j'"),
        ("1 1\nP1 1 a\nP1 1 P2 1\n", r"pairs.txt:2: expected"),
        ("1 2\nP1 1 2\nP1 1 P2 1\n", "announces 4 pairs but the file lists 2"),
        ("1 1\nP1 1 9\nP1 1 P2 1\n", r"pairs.txt:2: cannot read .*P1_0009.jpg"),
    ],
)
def test_pairs_file_errors(tmp_path, text, pattern):
    images = lfw_tree(tmp_path / "lfw")
    (tmp_path / "pairs.txt").write_text(text)
    with pytest.raises(ValueError, match=pattern):
        P.read_pair_images(tmp_path / "pairs.txt", images)
