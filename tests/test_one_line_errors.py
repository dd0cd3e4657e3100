"""Issue 14, one line always: crafted and fuzzed ``.bin`` pickles, oversized images, sets with no
or one kind of pair, unwritable outputs and full disks end in one ``error:`` line."""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import random
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import error_lines
from distill.evals import bins as B


def tiny_png(value: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def big_png(side: int = 12_000) -> bytes:
    """A valid, highly compressible PNG of side² black pixels (about 1.9 MB)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(1), b"\0" * (1 + 3 * side)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def assert_one_line(exc: Exception, path: Path) -> None:
    message = str(exc)
    assert "\n" not in message and message.startswith(str(path)), message


@pytest.mark.parametrize("name, data", [
    ("deep", b"\x80\x02(](C\x01xC\x01ye](" + b"]" * 100_000 + b"a" * 99_999 + b"et."),
    ("chain", b"\x80\x02]q\x00" + b"]h\x00aq\x00" * 50_000 + b"."),
    ("cycle", b"\x80\x02]q\x00h\x00a."),
    ("memo", b"\x80\x02]r\xff\xff\xff\x7f."),
    ("frame", b"\x80\x04\x95" + (2 ** 63 - 1).to_bytes(8, "little") + b"]."),
    ("bytes8", b"\x80\x04\x8e" + (2 ** 62).to_bytes(8, "little") + b"x."),
    ("opcode", b"\x80\x02c__builtin__\nobject\n)\x81."),
])
def test_crafted_pickles_are_refused_in_one_line(tmp_path, name, data):
    """Fault 6: deep nesting (RecursionError), a huge memo index (MemoryError) or frame
    (OverflowError), cycles and object-building opcodes are refused before allocating."""
    path = tmp_path / f"{name}.bin"
    path.write_bytes(data)
    with pytest.raises(ValueError) as info:
        B.read_bin(path)
    assert_one_line(info.value, path)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind, at = rng.randrange(6), rng.randrange(len(data))
        if kind == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 2:
            del data[at:at + rng.randint(1, 16)]
        elif kind == 3:
            data[at:at + 8] = rng.choice([b"\xff" * 8, b"\x7f\xff\xff\xff\xff\xff\xff\x7f", b"\0" * 8])
        elif kind == 4:
            data = data[:at]
        else:
            span = data[at:at + rng.randint(1, 32)]
            data[at:at] = span * rng.randint(1, 200)
        if not data:
            break
    return bytes(data)


def test_fuzzed_bins_give_only_one_line_errors(tmp_path):
    """1,200 seeded mutations of valid protocol 2 and 4 .bin pickles: each loads, or fails with
    a one-line ValueError naming the file; within a minute of CPU."""
    images = [tiny_png(v) for v in range(0, 240, 30)]
    issame = [True, False, True, False]
    bases = [pickle.dumps((images, issame), protocol=p) for p in (2, 4)]
    started, loaded, decoded = time.process_time(), 0, 0
    for seed in range(1200):
        rng = random.Random(seed)
        path = tmp_path / f"fuzz{seed}.bin"
        path.write_bytes(_mutate(bases[seed % 2], rng))
        try:
            B.read_bin(path)
            loaded += 1
            if loaded % 25 == 1:   # decoding goes through TensorFlow: a sample of them
                decoded += 1
                B.load_bin(path)
        except ValueError as exc:
            assert_one_line(exc, path)
    assert loaded > 50 and decoded > 2
    assert time.process_time() - started < 60


def test_image_declaring_gigapixels_is_refused_before_decoding(tmp_path, cli):
    """Fault 6: a small .bin holding a 12,000² PNG is refused by its header (no 1.3 GB peak)."""
    face = (Path(B.__file__).parents[1] / "demo_data" / "orl_faces" / "s1" / "1.png").read_bytes()
    path = B.save_bin([face, big_png(), face, face], [True, False], tmp_path / "huge.bin")
    assert path.stat().st_size < 3_000_000
    code, out, err = cli("eval", "-m", "unused.keras", "-b", path)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and str(path) in lines[0], err
    assert "image 1" in lines[0] and "more than 50,000,000 pixels" in lines[0]


@pytest.mark.parametrize("issame, needle", [([], "holds no pairs"), ([True, True], "all 2 pairs are same-person")])
def test_set_without_both_kinds_of_pair_names_the_bin(tmp_path, cli, issame, needle):
    """Fault 6: a .bin with 0 pairs or only one kind of pair is refused naming the .bin."""
    face = (Path(B.__file__).parents[1] / "demo_data" / "orl_faces" / "s1" / "1.png").read_bytes()
    path = B.save_bin([face] * 2 * len(issame), issame, tmp_path / "one_kind.bin")
    code, out, err = cli("eval", "-m", "unused.keras", "-b", path)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {path}: {needle}"), err


def test_unwritable_outputs_fail_at_once_in_one_line(tmp_path, faces_small, tiny_teacher, cli):
    """Fault 6: --out, --run-dir, --json and make-bin --out under a file (not a folder) are
    refused in one line naming the path, before any work (eval computes nothing to lose)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"train": str(faces_small)}, "stages": [{"epochs": 1}]}))
    heldout = B.make_bin(faces_small, tmp_path / "ok.bin", n_pairs=40)
    commands = {
        "embed": ["embed", "--teacher", tiny_teacher, "--data", faces_small, "--out", blocker / "store"],
        "train": ["train", "--recipe", recipe, "--run-dir", blocker / "run"],
        "eval": ["eval", "-m", tiny_teacher, "-b", heldout, "--json", blocker / "m.json"],
        "eval-ijb": ["eval-ijb", "-m", tiny_teacher, "--root", tmp_path, "--json", blocker / "m.json"],
        "make-bin": ["make-bin", faces_small, "--out", blocker / "x.bin", "--pairs", 10],
    }
    for name, args in commands.items():
        code, out, err = cli(*args)
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1 and str(blocker) in lines[0], (name, err)
        assert "not a folder" in lines[0], (name, lines[0])
        assert "accuracy" not in out, name


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (a real full disk); skipped where mounting is not allowed."""
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_is_one_line_and_leaves_no_temporaries(tmp_path, faces_small, tiny_teacher, cli):
    """Fault 6: embed (HDF5 failures and a segfault before) and train on a full disk."""
    with small_disk(tmp_path / "disk", "12k") as disk:
        code, out, err = cli("embed", "--teacher", tiny_teacher, "--data", faces_small, "--out", disk / "store",
                             "--no-progress")
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1 and "no space left on the device" in lines[0], err
        assert not list((disk / "store").glob("*.tmp")) and not list((disk / "store").glob("*.tmp-*"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": {"train": str(faces_small)}, "model": {"alpha": 0.25, "embedding_size": 32},
        "train": {"batch_size": 25, "gradient_stats": False}, "stages": [{"epochs": 1, "lr": 0.01}]}))
    with small_disk(tmp_path / "disk2", "256k") as disk:
        code, out, err = cli("train", "--recipe", recipe, "--run-dir", disk / "run", "--no-progress")
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1 and "no space left on the device" in lines[0], err
        assert "checkpoint" in lines[0] and not list((disk / "run").rglob("*.tmp"))


def test_console_script_output_that_is_a_folder_is_one_line(tmp_path):
    """The installed script, not only the in-process app: one line, exit 2, no traceback."""
    from conftest import run_console

    folder = tmp_path / "set.bin"
    folder.mkdir()
    result = run_console("make-bin", tmp_path, "--out", folder)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1 and f"{folder}: is a folder" in lines[0], result.stderr


def test_eval_keeps_its_metrics_when_the_disk_fills(tmp_path, faces_small, tiny_teacher, cli):
    """Fault 6: --json on a full disk: one line, the table is printed and --csv still written."""
    heldout = B.make_bin(faces_small, tmp_path / "ok.bin", n_pairs=40)
    with small_disk(tmp_path / "disk", "64k") as disk:
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
        code, out, err = cli("eval", "-m", tiny_teacher, "-b", heldout, "--json", disk / "m.json",
                             "--csv", tmp_path / "m.csv")
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1 and "no space left on the device" in lines[0], err
        assert str(disk / "m.json") in lines[0] and "ok" in out and (tmp_path / "m.csv").is_file(), out
        assert not list(disk.glob("*.tmp"))
