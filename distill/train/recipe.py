"""Training recipes: YAML → validated dataclasses, with ``extends`` and ``--set`` overrides.

A recipe is refused before any work when a key is unknown (the closest valid key is
suggested), a value has the wrong type, or a stage has no ``epochs``; the error names the
key and its place (e.g. ``stages.1.lr``).
"""
from __future__ import annotations

import difflib
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from distill.train.checks import RecipeError, check_recipe
from distill.train.stages import AUTO, AUTO_TARGET
from distill.utils import read_yaml_mapping
from distill.yaml_files import DuplicateKeyError, load_yaml, yaml_problem


#: keys that moved: old path → new path (refused with the new name)
MOVED = {"train.images_per_identity": "data.images_per_identity"}


@dataclass
class DataConfig:
    train: str = ""                 # class folders, file list, or RecordIO set
    store: str | None = None        # teacher embedding store (None: no distillation)
    eval: list = field(default_factory=list)   # verification .bin files
    augment: str = "flip"           # registry name in distill.train.pipeline.AUGMENTATIONS
    min_class_images: int = 1       # classes with fewer images are unlabelled (distillation only)
    use_unlabeled: bool = True      # false: unlabelled samples are not trained on at all
    num_parallel_reads: int = -1    # decode threads; -1: AUTOTUNE with a GPU, cores/4 on CPU
    skip_bad: bool = False          # leave out (and record in RUN/skipped.json) unreadable images
    targets: str = "auto"           # teacher targets: memory, pread, mmap, auto (distill.train.targets)
    sampler: str = "auto"           # batch order: shuffle, identity_balanced (P×K), auto (P×K with triplet)
    images_per_identity: int = 4    # K of identity_balanced batches (P = train.batch_size / K)


@dataclass
class ModelConfig:
    backbone: str = "mobilenet"
    alpha: float | None = None      # width multiplier, for backbones that have one
    embedding_size: int = 128
    output_layer: str = "E"
    dropout: float = 0.0
    bn_momentum: float = 0.9
    bn_epsilon: float = 2e-5
    sub_centers: int = 1
    activation: str = "relu"        # "prelu" swaps every ReLU of the backbone for a PReLU


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4      # MXNet semantics: wd·w added to the gradient
    classifier_wd_mult: float = 1.0  # MXNet fc7_wd_mult


@dataclass
class ScheduleConfig:
    name: str = "constant"          # registry name in distill.train.schedules.SCHEDULES
    epochs: list = field(default_factory=list)   # step: global epochs where lr × factor
    factor: float = 0.1
    decay_rate: float = 0.96        # exponential
    decay_epochs: float = 1.0
    first_epochs: float = 10.0      # cosine_restarts
    t_mul: float = 2.0
    m_mul: float = 1.0
    alpha: float = 0.0
    warmup_steps: int = 0


@dataclass
class StageConfig:
    epochs: int = 0
    lr: float | None = None
    loss: dict | None = None        # {name: arcface, scale: 64, margin: 0.5, ...}
    scale: float | None = None      # shortcut for the loss scale of this stage
    distill_weight: float | None = None
    triplet_weight: float | None = None
    center_weight: float | None = None
    weights: dict | None = None     # term name → weight (classification, distill, or a terms.* name)
    bottleneck_only: bool | None = None


@dataclass
class TrainConfig:
    batch_size: int = 64
    best_by: str | None = None      # eval set name that selects best.keras (default: first)
    eval_flip: bool = True
    eval_batch_size: int = 128
    eval_every_epochs: int = 1      # evaluate after every N-th epoch (and always after the last)
    eval_every_steps: int = 0       # also evaluate every N steps (0: only after epochs)
    distribute: str = "auto"        # auto (mirrored over all GPUs when >1), none, mirrored, multi_worker
    devices: list = field(default_factory=list)  # replicas for mirrored ([]: every GPU)
    sync_bn: bool = True            # BN statistics over the global batch when replicated
    mixed_precision: bool = False   # student in float16 compute; classifier and losses float32
    gradient_stats: bool = True     # log each term's gradient norm and cosine vs classification
    deterministic: bool = True      # same weights on every run and after resume (see step.py)
    auto_weight_steps: int = 20     # batches that set a `weight: auto` term (distill.train.auto_weight)


@dataclass
class Recipe:
    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: dict = field(default_factory=lambda: {"name": "arcface", "scale": 64.0, "margin": 0.5})
    distill: dict = field(default_factory=lambda: {"name": "l2", "weight": 0.0})
    triplet: dict = field(default_factory=lambda: {"name": "triplet_batch_hard", "weight": 0.0})
    center: dict = field(default_factory=lambda: {"name": "center", "weight": 0.0})
    terms: dict = field(default_factory=dict)   # further terms: name → {name: <loss>, weight, ...}
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: list[StageConfig] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def total_epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)


def load_recipe(path=None, overrides=(), data: dict | None = None) -> Recipe:
    """Load ``path`` (following ``extends``), apply ``key=value`` overrides, validate."""
    raw = _load_yaml_tree(Path(path)) if path is not None else {}
    if data:
        raw = _deep_merge(raw, data)
    where = str(path) if path is not None else "recipe"
    for item in overrides:
        _apply_override(raw, item, where)
    return recipe_from_dict(raw, where)


def recipe_from_dict(raw: dict, where: str = "recipe") -> Recipe:
    recipe = _build(Recipe, raw, where, "")
    if not recipe.stages:
        raise RecipeError(f"{where}: 'stages' must list at least one stage with 'epochs'")
    for index, stage in enumerate(recipe.stages):
        if stage.epochs < 1:
            raise RecipeError(f"{where}: stages.{index}.epochs is required and must be ≥ 1")
    if not recipe.data.train:
        raise RecipeError(f"{where}: data.train (the training images) is required")
    _check_terms(recipe, where)
    from distill.train.targets import TARGET_MODES

    if recipe.data.targets not in TARGET_MODES:
        raise RecipeError(f"{where}: data.targets must be one of {', '.join(TARGET_MODES)}, "
                          f"got {recipe.data.targets!r}")
    return check_recipe(recipe, where)


def _check_terms(recipe: Recipe, where: str) -> None:
    """Every loss term: a registered loss of the right kind, known parameters, weight ≥ 0;
    stage ``weights`` name existing terms."""
    from distill import losses
    from distill.losses import NAMED_TERMS

    sections = {"loss": ("classification", recipe.loss), "distill": ("distill", recipe.distill),
                "triplet": ("triplet", recipe.triplet), "center": ("center", recipe.center)}
    sections.update({f"terms.{k}": (None, v) for k, v in recipe.terms.items()})
    for place, (label, config) in sections.items():
        if not isinstance(config, dict):
            raise RecipeError(f"{where}: {place} must be a mapping, got {config!r}")
        if label in NAMED_TERMS:
            kind, default = NAMED_TERMS[label]
        else:
            kind, default = None, None
            if place.split(".", 1)[1] in NAMED_TERMS:
                raise RecipeError(f"{where}: {place}: '{place.split('.', 1)[1]}' is a section of its own")
        _check_term(config, kind, default, where, place)
    labels = ["classification", "distill", "triplet", "center", *recipe.terms]
    for index, stage in enumerate(recipe.stages):
        if stage.loss is not None and "name" in stage.loss:
            _check_term(stage.loss, "classification", None, where, f"stages.{index}.loss")
        elif stage.loss is not None:
            _check_term({**recipe.loss, **stage.loss}, "classification", None, where, f"stages.{index}.loss")
        for key, value in (stage.weights or {}).items():
            if key not in labels:
                close = difflib.get_close_matches(str(key), labels, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; terms: {', '.join(labels)}"
                raise RecipeError(f"{where}: stages.{index}.weights.{key} is not a term{hint}")
            _check_weight(value, where, f"stages.{index}.weights.{key}")
        for key in ("distill_weight", "triplet_weight", "center_weight"):
            if getattr(stage, key) is not None:
                _check_weight(getattr(stage, key), where, f"stages.{index}.{key}")


def _check_weight(value, where, place) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        hint = ("; 'auto' goes on the term itself (e.g. distill: {weight: auto}) and stages inherit it"
                if value == AUTO and place.startswith("stages.") else "")
        raise RecipeError(f"{where}: {place} must be a number ≥ 0, got {value!r}{hint}")


def _check_auto(params: dict, kind: str, where: str, place: str) -> None:
    """``weight: auto`` only on distillation terms; ``auto_target`` a number > 0, with it only."""
    if params.get("weight") == AUTO and kind != "distillation":
        raise RecipeError(f"{where}: {place}.weight: 'auto' balances a distillation term against "
                          f"classification; this is a {kind} term, give it a number")
    if AUTO_TARGET in params:
        target = params[AUTO_TARGET]
        if params.get("weight") != AUTO:
            raise RecipeError(f"{where}: {place}.{AUTO_TARGET} is read only with {place}.weight: auto")
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0:
            raise RecipeError(f"{where}: {place}.{AUTO_TARGET} must be a number > 0, got {target!r}")


def _check_term(config: dict, kind, default, where: str, place: str) -> None:
    from distill import losses
    from distill.losses.partial_fc import SAMPLE_RATE, check_sample_rate

    params = dict(config)
    auto = {}
    if params.get("weight") == AUTO or AUTO_TARGET in params:   # checked once the loss's kind is known
        auto = {k: params.pop(k) for k in ("weight", AUTO_TARGET) if k in params}
    if "weight" in params:
        if isinstance(params["weight"], str):
            try:
                params["weight"] = float(params["weight"])
            except ValueError:
                pass
        _check_weight(params.pop("weight"), where, f"{place}.weight")
    name = params.pop("name", default)
    rate = params.pop(SAMPLE_RATE, None)
    if name is None:
        raise RecipeError(f"{where}: {place}.name is required (a loss from `distill losses list`)")
    if name not in losses.available():
        names = [n for n, s in losses.available().items() if kind is None or s.kind == kind]
        close = difflib.get_close_matches(str(name), names, n=2, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise RecipeError(f"{where}: {place}.name: unknown {kind or ''} loss '{name}'{hint}; "
                          f"valid: {', '.join(names)}".replace("  ", " "))
    loss_spec = losses.spec(name)
    if rate is not None:
        try:
            check_sample_rate(rate)
        except ValueError as exc:
            raise RecipeError(f"{where}: {place}.{SAMPLE_RATE} {exc}") from None
        if loss_spec.kind != "classification":
            raise RecipeError(f"{where}: {place}.{SAMPLE_RATE}: only classification losses sample "
                              f"classes; '{name}' is a {loss_spec.kind} loss")
    _check_auto(auto, loss_spec.kind, where, place)
    valid = ["name", "weight", *loss_spec.defaults]
    for key in params:
        if key not in loss_spec.defaults:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise RecipeError(f"{where}: {place}: loss '{name}' has no parameter '{key}'{hint}; "
                              f"valid: {', '.join(valid)}")
    if kind is not None and loss_spec.kind != kind:
        valid = ", ".join(n for n, s in losses.available().items() if s.kind == kind)
        raise RecipeError(f"{where}: {place}.name '{name}' is a {loss_spec.kind} loss, not "
                          f"{kind}; valid: {valid}")


def save_recipe(recipe: Recipe, path) -> None:
    from distill.utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False))


def _load_yaml_tree(path: Path, seen=()) -> dict:
    raw = read_yaml_mapping(path, RecipeError, "recipe file")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    base_path = (path.parent / base).resolve()
    if base_path in seen:
        raise RecipeError(f"{path}: 'extends' loops back to {base_path}")
    return _deep_merge(_load_yaml_tree(base_path, seen + (base_path,)), raw)


def _deep_merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict, item: str, where: str) -> None:
    """``a.b.0.c=value`` (value parsed as YAML) into the nested dict/list ``raw``."""
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected key=value")
    key, text = item.split("=", 1)
    try:
        value = load_yaml(text, key.strip()) if text.strip() else None
    except DuplicateKeyError as exc:
        raise RecipeError(f"--set {item}: {exc}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {item}: not valid YAML ({yaml_problem(exc)})") from None
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        nxt = parts[depth + 1]
        if isinstance(node, list):
            index = _list_index(node, part, key)
            node = node[index]
            continue
        if part not in node or node[part] is None:
            node[part] = [] if nxt.isdigit() else {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        index = int(last) if last.isdigit() else _list_index(node, last, key)
        while len(node) <= index:
            node.append({})
        node[index] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, key: str) -> int:
    if not part.isdigit():
        raise RecipeError(f"--set {key}: {part!r} must be a list index")
    index = int(part)
    while len(node) <= index:
        node.append({})
    return index


def _build(cls, raw, where: str, place: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: {place or 'recipe'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in raw:
        if _join(place, key) in MOVED:
            raise RecipeError(f"{where}: {_join(place, key)} is now {MOVED[_join(place, key)]}; rename it")
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{_join(place, close[0])}'?" if close else f"; valid keys: {', '.join(names)}"
            raise RecipeError(f"{where}: unknown key '{_join(place, key)}'{hint}")
    values = {key: _convert(hints[key], value, where, _join(place, key)) for key, value in raw.items()}
    return cls(**values)


def _convert(hint, value, where, place):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where, place)
    if is_dataclass(hint):
        return _build(hint, value, where, place)
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: {place} must be a list, got {value!r}")
        item = args[0] if args else None
        return [_convert(item, v, where, f"{place}.{i}") if item else v for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: {place} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: {place} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: {place} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 5e-4 as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: {place} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: {place} must be a string, got {value!r}")
        return value
    return value


def _join(place: str, key) -> str:
    return f"{place}.{key}" if place else str(key)
