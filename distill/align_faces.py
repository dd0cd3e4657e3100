"""Detect and align faces in a folder of photos: ``SRC`` tree → ``DST`` tree of 112×112 crops.

Each photo (in a class-per-folder tree or a flat folder) goes through a face detector from
``DETECTORS``; the largest face (or every face) is warped from its five landmarks onto the
ArcFace template with :func:`distill.align.warp_face` and written as PNG at the same relative
place under ``DST``: ``<stem>.png``, or ``<stem>_<k>.png`` (k = 0 for the largest) with
``all_faces``. Photos without a face or unreadable ones are listed in ``DST/align_report.json``.
Runs are resumable: photos whose crops exist are skipped and crops are written atomically.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from distill.align import warp_face
from distill.registry import Registry
from distill.data.sources import IMAGE_EXTENSIONS

REPORT_NAME = "align_report.json"


class AlignError(ValueError):
    """Bad alignment input; the message names the file or folder and the problem."""


DETECTORS = Registry("face detector", error=AlignError)


class Face(NamedTuple):
    """One detection: ``box`` = (x1, y1, x2, y2), ``landmarks`` = 5×2 (x, y) in the order
    left eye, right eye, nose, left mouth corner, right mouth corner (as seen in the image)."""

    box: tuple
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


#: ``@register_detector(name)`` on ``factory(min_face=..., ...)`` → ``RGB uint8 image → list[Face]``
register_detector = DETECTORS.register


def make_detector(name: str, **params):
    return DETECTORS.build(name, **params)


@register_detector("mtcnn")
class MtcnnDetector:
    """MTCNN from the ``mtcnn`` package (weights ship in the wheel; runs offline on TensorFlow)."""

    def __init__(self, min_face: int = 20, device: str = "CPU:0"):
        self._mtcnn = _mtcnn_model(device)
        # pyramid from MTCNN's default window (12..20 px): larger starts miss faces in small
        # photos; faces under min_face are dropped afterwards by their box size
        self.min_face = min(max(int(min_face), 12), 20)

    def __call__(self, image: np.ndarray) -> list[Face]:
        rows = self._mtcnn.detect_faces(image, box_format="xyxy", output_type="numpy",
                                        min_face_size=self.min_face)
        faces = []
        for row in np.asarray(rows, dtype=np.float64).reshape(-1, 16):
            # numpy layout: image_id, x1, y1, x2, y2, score, five x's, then five y's
            landmarks = np.stack([row[6:11], row[11:16]], axis=1)
            faces.append(Face(box=tuple(float(v) for v in row[1:5]), score=float(row[5]),
                              landmarks=landmarks))
        return faces


@register_detector("center")
class CenterCrop:
    """Not a detector: the central square (``crop`` × the shorter side) taken as the face, with
    the template's landmarks placed in it, so the warp is a plain centre crop and resize. Use it
    as ``fallback`` for photos where the detector finds nothing, or alone for pre-centred sets
    such as LFW deep-funneled (``crop=0.512`` takes the central 128 of 250 pixels)."""

    def __init__(self, min_face: int = 20, crop: float = 0.5):
        if not 0 < crop <= 1:
            raise AlignError(f"center crop must be a fraction in (0, 1], got {crop}")
        self.crop = float(crop)

    def __call__(self, image: np.ndarray) -> list[Face]:
        from distill.align import ARCFACE_TEMPLATE

        height, width = image.shape[:2]
        side = self.crop * min(height, width)
        x1, y1 = (width - side) / 2.0, (height - side) / 2.0
        # template pixel centres (0..111) mapped onto the box's pixel centres
        landmarks = ARCFACE_TEMPLATE * (side / 112.0) + np.array([x1, y1]) + (side / 112.0 - 1) / 2.0
        return [Face(box=(x1, y1, x1 + side, y1 + side), score=1.0, landmarks=landmarks)]


@functools.lru_cache(maxsize=None)
def _mtcnn_model(device: str):
    """One MTCNN per device and process (building it loads three networks)."""
    try:
        from mtcnn import MTCNN
    except ImportError:
        raise AlignError("face detection needs the mtcnn package: pip install 'distill[align]'") from None
    return MTCNN(device=device)


@dataclass
class AlignReport:
    """Outcome of :func:`align_folder` (also written to ``DST/align_report.json``).

    ``already_done`` counts photos skipped because their crops exist or an earlier run
    reported them (``no_face`` / ``unreadable`` keep those entries)."""

    source: str
    settings: dict
    photos: int = 0
    aligned: int = 0
    faces_written: int = 0
    already_done: int = 0
    no_face: list = field(default_factory=list)
    fallback: list = field(default_factory=list)   # photos cropped by the fallback detector
    unreadable: list = field(default_factory=list)

    def summary(self, dst) -> str:
        fallback = f", {len(self.fallback)} of them by the fallback" if self.fallback else ""
        return (f"{dst}: {self.faces_written} faces from {self.aligned} photos{fallback} "
                f"({self.already_done} already done, {self.photos} in all); "
                f"{len(self.no_face)} without a face, {len(self.unreadable)} unreadable "
                f"(see {Path(dst) / REPORT_NAME})")


def list_photos(src: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``src`` (any depth), sorted, leaving out anything under ``exclude``."""
    if not src.is_dir():
        raise AlignError(f"{src}: source folder does not exist")
    photos = []
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        photos.append(path)
    if not photos:
        raise AlignError(f"{src}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the source folder")
    return photos


def output_stems(src: Path, photos: list[Path], dst: Path) -> dict[Path, Path]:
    """Photo → output path without suffix; ``a.jpg`` and ``a.png`` side by side keep their extension."""
    counts: dict[Path, int] = {}
    for photo in photos:
        key = photo.parent / photo.stem
        counts[key] = counts.get(key, 0) + 1
    stems = {}
    for photo in photos:
        rel = photo.relative_to(src)
        name = photo.stem if counts[photo.parent / photo.stem] == 1 else f"{photo.stem}_{photo.suffix[1:]}"
        stems[photo] = dst / rel.parent / name
    return stems


def read_photo(path: Path) -> np.ndarray:
    """RGB uint8 at the photo's own size, EXIF rotation applied."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise ValueError(str(exc)) from None


def _largest_first(face: Face, shape) -> float:
    return -face.area


def _central_first(face: Face, shape) -> float:
    """Distance of the box centre from the photo centre (LFW: the named person is central)."""
    cx, cy = (face.box[0] + face.box[2]) / 2.0, (face.box[1] + face.box[3]) / 2.0
    return float(np.hypot(cx - shape[1] / 2.0, cy - shape[0] / 2.0))


#: ``pick`` name → sort key (smaller first) of the faces found in one photo.
FACE_ORDER: dict[str, Callable] = {"largest": _largest_first, "center": _central_first}


def choose_faces(faces: list[Face], all_faces: bool, min_face: float, pick: str = "largest",
                 shape=(0, 0)) -> list[Face]:
    """Faces at least ``min_face`` pixels, in ``pick`` order (``FACE_ORDER``: largest first, or
    nearest the centre of a photo of ``shape`` first); only the first unless ``all_faces``."""
    if pick not in FACE_ORDER:
        raise AlignError(f"unknown face pick {pick!r}; available: {', '.join(FACE_ORDER)}")
    kept = sorted((f for f in faces if f.size >= min_face), key=lambda f: FACE_ORDER[pick](f, shape))
    return kept if all_faces else kept[:1]


def write_png(image: np.ndarray, path: Path) -> None:
    """Write a PNG atomically (temporary file in the same folder, then rename)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _done_marker(stem: Path, all_faces: bool) -> Path:
    # with all_faces, crop _0 is renamed into place last, so it marks a finished photo
    return stem.with_name(stem.name + ("_0.png" if all_faces else ".png"))


def _load_previous(report_path: Path, settings: dict) -> dict:
    if not report_path.exists():
        return {}
    try:
        previous = json.loads(report_path.read_text())
    except (OSError, ValueError) as exc:
        raise AlignError(f"{report_path}: cannot read the previous report ({exc})") from None
    if previous.get("settings") != settings:
        raise AlignError(f"{report_path}: DST was aligned with other settings {previous.get('settings')}; "
                         f"use the same settings to resume, or another DST")
    return previous


def save_report(report: AlignReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(report), indent=2) + "\n")
    os.replace(tmp, path)


def align_folder(src, dst, *, all_faces: bool = False, min_face: int = 20, detector: str = "mtcnn",
                 size=(112, 112), retry_failed: bool = False, progress: bool = True,
                 pick: str = "largest", fallback: str | None = None,
                 center_crop: float = 0.5) -> AlignReport:
    """Align every photo under ``src`` into ``dst``; see the module docstring.

    ``pick`` chooses among several faces (``FACE_ORDER``); ``fallback`` names a second detector
    (``"center"``: a centre crop of ``center_crop`` × the shorter side) used where the first
    finds no face; such photos are listed in the report's ``fallback``."""
    from tqdm import tqdm

    src, dst = Path(src), Path(dst)
    if min_face < 1:
        raise AlignError(f"min_face must be a positive number of pixels, got {min_face}")
    if pick not in FACE_ORDER:
        raise AlignError(f"unknown face pick {pick!r}; available: {', '.join(FACE_ORDER)}")
    settings = {"detector": detector, "all_faces": bool(all_faces), "min_face": int(min_face),
                "size": [int(size[0]), int(size[1])]}
    if pick != "largest" or fallback or detector == "center":  # older reports stay resumable
        settings.update(pick=pick, fallback=fallback, center_crop=float(center_crop))
    photos = list_photos(src, exclude=dst.resolve())
    report_path = dst / REPORT_NAME
    previous = _load_previous(report_path, settings)
    report = AlignReport(source=str(src), settings=settings, photos=len(photos))
    failed_before = set()
    if not retry_failed:
        report.no_face = list(previous.get("no_face", []))
        report.unreadable = list(previous.get("unreadable", []))
        report.fallback = list(previous.get("fallback", []))
        failed_before = set(report.no_face) | {entry["path"] for entry in report.unreadable}
    stems = output_stems(src, photos, dst)
    todo = [p for p in photos if not _done_marker(stems[p], all_faces).exists()
            and p.relative_to(src).as_posix() not in failed_before]
    report.already_done = len(photos) - len(todo)
    def detector_params(name):
        return {"min_face": min_face, **({"crop": center_crop} if name == "center" else {})}

    find_faces = make_detector(detector, **detector_params(detector)) if todo else None
    find_fallback = make_detector(fallback, **detector_params(fallback)) if todo and fallback else None
    try:
        for photo in tqdm(todo, desc="align", unit="photo", disable=not progress):
            rel = photo.relative_to(src).as_posix()
            try:
                image = read_photo(photo)
            except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for bad files
                report.unreadable.append({"path": rel, "error": f"{type(exc).__name__}: {exc}"})
                continue
            faces = choose_faces(find_faces(image), all_faces, min_face, pick, image.shape)
            if not faces and find_fallback is not None:
                faces = find_fallback(image)[:1]
                if faces:
                    report.fallback.append(rel)
            if not faces:
                report.no_face.append(rel)
                continue
            crops = [warp_face(image, face.landmarks, size) for face in faces]
            stem = stems[photo]
            if all_faces:  # _0 last: its presence means the photo is complete
                for k in range(len(crops) - 1, -1, -1):
                    write_png(crops[k], stem.with_name(f"{stem.name}_{k}.png"))
            else:
                write_png(crops[0], stem.with_name(stem.name + ".png"))
            report.aligned += 1
            report.faces_written += len(crops)
    finally:
        save_report(report, report_path)
    return report
