"""``distill store verify``: check a store end to end; ``distill store info``: summarise it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.store.integrity import digest, row_problems
from distill.store.manifest import LISTING_NAME, Manifest, StoreError, shard_name
from distill.utils import first_line


def verify_store(path) -> list[str]:
    """Return a list of problems (empty when the store is sound)."""
    import h5py

    path = Path(path)
    try:
        manifest = Manifest.load(path)
    except StoreError as exc:
        return [str(exc)]
    problems: list[str] = []
    labels = _listing_labels(path, manifest, problems)
    seen = np.zeros(manifest.num_samples, dtype=np.int32)
    fields = ["embedding", "label", "sample_id"] + (["embedding_flip"] if manifest.flip else [])
    for k in range(manifest.num_shards):
        name = shard_name(k)
        if name not in manifest.shards:
            problems.append(f"{name}: not complete (store unfinished; rerun `distill embed`)")
            continue
        first, end = manifest.shard_range(k)
        problem = _checksum_problem(path / name, manifest.shards[name])
        if problem:
            problems.append(problem)
        try:
            with h5py.File(path / name, "r") as handle:
                missing = [f for f in fields if f not in handle]
                if missing:
                    problems.append(f"{name}: missing dataset(s) {', '.join(missing)}")
                    continue
                data = {f: handle[f][...] for f in fields}
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"{name}: cannot be read as HDF5 ({first_line(exc)})")
            continue
        problems.extend(_check_shard(name, data, manifest, first, end, labels, seen))
    skipped = np.array([s["sample_id"] for s in manifest.skipped], dtype=np.int64)
    if len(skipped):
        seen[skipped[(skipped >= 0) & (skipped < manifest.num_samples)]] += 1
    if manifest.is_complete():
        missing_ids = np.flatnonzero(seen == 0)
        if len(missing_ids):
            problems.append(f"{len(missing_ids)} sample_id(s) missing (first: {missing_ids[:5].tolist()})")
    duplicated = np.flatnonzero(seen > 1)
    if len(duplicated):
        problems.append(f"{len(duplicated)} sample_id(s) stored more than once (first: {duplicated[:5].tolist()})")
    return problems


def _listing_labels(path: Path, manifest: Manifest, problems: list) -> np.ndarray | None:
    listing = path / manifest.source.get("listing", LISTING_NAME)
    if not listing.is_file():
        problems.append(f"{listing}: listing file missing")
        return None
    labels = []
    for number, line in enumerate(listing.read_bytes().decode("utf-8", "replace").splitlines(), start=1):
        label = line.rsplit("\t", 1)[-1] if "\t" in line else ""
        if line and not label.lstrip("-").isdigit():
            problems.append(f"{listing}:{number}: expected 'path<TAB>label', got {line[:60]!r}")
            return None
        if line:
            labels.append(int(label))
    if len(labels) != manifest.num_samples:
        problems.append(f"{listing}: {len(labels)} rows, manifest says {manifest.num_samples} samples")
        return None
    return np.array(labels, dtype=np.int64)


def _check_shard(name, data, manifest, first, end, labels, seen) -> list[str]:
    problems = []
    ids = data["sample_id"]
    count = len(ids)
    recorded = manifest.shards[name]["count"]
    if count != recorded:
        problems.append(f"{name}: {count} rows, manifest records {recorded}")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        return problems + [f"{name}: sample_id has shape {ids.shape} and dtype {ids.dtype}, expected integers"]
    for field in [f for f in data if f.startswith("embedding")]:
        problems.extend(f"{name}: {problem}" for problem in row_problems(ids, data[field], field, manifest))
    if len(data["label"]) != count:
        problems.append(f"{name}: label has {len(data['label'])} rows, sample_id has {count}")
    outside = (ids < first) | (ids >= end)
    if outside.any():
        problems.append(f"{name}: sample_id(s) outside the shard range [{first}, {end}): {ids[outside][:5].tolist()}")
    valid = ids[~outside]
    np.add.at(seen, valid, 1)
    if labels is not None and len(data["label"]) == count and data["label"].ndim == 1:
        wrong = data["label"][~outside] != labels[valid]
        if wrong.any():
            problems.append(f"{name}: label differs from the listing for sample_id {valid[wrong][:5].tolist()}")
    return problems


def _checksum_problem(path: Path, entry: dict) -> str | None:
    if not entry.get("sha256") or not path.is_file():
        return None
    if digest(path.read_bytes()) != entry["sha256"]:
        return (f"{path.name}: does not match the SHA-256 in the manifest (damaged or changed); "
                "rerun the same `distill embed` command to redo it")
    return None


def store_info(path) -> dict:
    """A short summary of a store for ``distill store info``."""
    manifest = Manifest.load(path)
    size = sum(p.stat().st_size for p in Path(path).glob("shard-*.h5"))
    return {
        "store": str(path),
        "samples": manifest.num_samples,
        "classes": manifest.num_classes,
        "embedding_dim": manifest.embedding_dim,
        "dtype": manifest.dtype,
        "flip": manifest.flip,
        "shards": f"{len(manifest.shards)}/{manifest.num_shards} complete",
        "skipped": len(manifest.skipped),
        "teacher": f"{manifest.teacher.get('kind')} {manifest.teacher.get('source')} "
                   f"(sha256 {str(manifest.teacher.get('sha256'))[:12]})",
        "source": f"{manifest.source.get('kind')} {manifest.source.get('root')}",
        "conditioning": manifest.conditioning.get("mode", "none"),
        "size_mb": round(size / 2**20, 2),
    }


def store_shape(path, max_samples: int = 50_000) -> list[str]:
    """Lines describing the teacher space as stored and as conditioned (if it is), with a
    warning when it is cone-shaped (see :mod:`distill.store.conditioning`)."""
    from distill.store.conditioning import CONE_WARNING, space_shape
    from distill.store.reader import Store

    store = Store(path).require_complete()
    rows, labels = [], []
    for shard in store.iter_shards(("label", "embedding"), conditioned=False):
        rows.append(shard["embedding"].astype(np.float32))
        labels.append(shard["label"])
        if sum(len(x) for x in labels) >= max_samples:
            break
    stored = np.concatenate(rows)[:max_samples]
    labels = np.concatenate(labels)[:max_samples]
    spaces = {"stored": stored}
    if not store.conditioning.is_identity:
        spaces[f"conditioned ({store.conditioning.mode})"] = store.conditioning.apply_numpy(stored)
    lines, shape = [], {}
    for name, x in spaces.items():
        shape = space_shape(x, labels)
        lines.append(f"{'space ' + name:>14}: mean cos to mean direction "
                     f"{shape['mean_cosine_to_mean_direction']:.3f}; same-label cos "
                     f"{shape['same_label_cosine']:.3f}, different-label cos "
                     f"{shape['different_label_cosine']:.3f} (separation {shape['separation']:.2f})")
    if shape["mean_cosine_to_mean_direction"] > CONE_WARNING:
        lines.append(f"{'warning':>14}: the teacher space is a narrow cone; distillation targets "
                     f"differ mostly by a shared offset. Condition it: distill store condition "
                     f"{path} --mode center")
    return lines
