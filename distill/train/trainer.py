"""``distill train``: a student (or teacher) trained on classification + distillation.

The run directory holds ``recipe.yaml`` (resolved), ``history.json`` (per epoch: stage, lr,
loss terms, each eval set's accuracy/std/threshold), ``checkpoint/`` (every epoch),
``best.keras`` (best embedding model by ``train.best_by``) and ``model.keras`` (last).
Saved embedding models carry no classifier head.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from distill.train.checkpoints import (check_arrays, copy_state, load_state, restore_variables,
                                      save_checkpoint)
from distill.train.recipe import Recipe, load_recipe, save_recipe
from distill.train.epoch_log import ScalarWriter, epoch_summary
from distill.train.run_dir import RunDir
from distill.train.stages import ResolvedStage, projection_notes, resolve_stages, sampler_of, stage_of_epoch
from distill.utils import atomic_write_json, set_seed
from distill.train.step import reproducible_graphs

log = logging.getLogger(__name__)


#: metrics of each evaluation set kept in history.json
EVAL_KEYS = ("accuracy", "accuracy_std", "threshold", "accuracy_exact", "threshold_exact",
             "tar_at_far_1e-3", "auc")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a NaN loss); the message says where and why."""


@dataclass
class TrainResult:
    run_dir: Path
    history: list
    best_model: Path | None
    final_model: Path
    best: dict | None           # {"set", "accuracy", "epoch"}


def train(recipe, run_dir=None, overrides=(), resume: bool = False, progress: bool = True,
          stop_after_epochs: int | None = None) -> TrainResult:
    """Train from a recipe (path, dict or :class:`Recipe`) into ``run_dir``.

    With ``resume=True`` the run continues from its last checkpoint (the recipe saved in
    the run directory is used, plus ``overrides``); the result equals an uninterrupted run.
    ``stop_after_epochs`` ends this call after that many epochs (e.g. to fit a time-limited
    job); resume later to continue.
    """
    where = "recipe"
    if resume:
        if run_dir is None:
            raise TrainingError("resume needs the run directory")
        where = str(RunDir(run_dir).recipe)
        recipe = load_recipe(where, overrides)
    elif isinstance(recipe, (str, Path)):
        where = str(recipe)
        recipe = load_recipe(recipe, overrides)
    elif isinstance(recipe, dict):
        recipe = load_recipe(None, overrides, data=recipe)
    elif overrides:
        recipe = load_recipe(None, overrides, data=recipe.to_dict())
    from distill.train.checks import check_files

    check_files(recipe, where)
    run_dir = Path(run_dir or Path("runs") / recipe.name)
    return Trainer(recipe, run_dir, progress).run(resume, stop_after_epochs)


class Trainer:
    """Holds the model, classifier, data and state of one run; see :func:`train`."""

    def __init__(self, recipe: Recipe, run_dir: Path, progress: bool = True):
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.files = RunDir(run_dir)
        self.scalars = ScalarWriter(self.files.tensorboard)
        self.auto_weights, self.new_auto_weights = {}, {}   # term → measured weight (run() fills)
        self.progress = progress
        self.stages = resolve_stages(recipe)

    # ----------------------------------------------------------------- setup
    def _setup(self):
        from distill.data.sources import open_source
        from distill.models import build_embedding_model
        from distill.models.classifier import CosineClassifier
        from distill.train.distributed import is_chief
        from distill.train.step import make_strategy

        recipe = self.recipe
        set_seed(recipe.seed)
        # first: MultiWorkerMirroredStrategy must be created before any TF op runs
        self.strategy = make_strategy(recipe.train.distribute, recipe.train.devices)
        self.chief = is_chief(self.strategy)
        if recipe.train.deterministic:
            reproducible_graphs()
        self.source = open_source(recipe.data.train)
        self.targets = self._load_targets()
        self.sample_ids = np.arange(len(self.source), dtype=np.int64)
        if self.targets is not None:
            self.sample_ids = self.sample_ids[self.targets.present]
        self.labels, self.num_classes = training_labels(self.source.labels, self.sample_ids,
                                                        recipe.data.min_class_images)
        self.labelled_ids = self.sample_ids[self.labels[self.sample_ids] >= 0]
        if recipe.data.skip_bad:   # after the labels, so that skipping never renumbers classes
            from distill.train.unreadable import skip_unreadable

            bad = skip_unreadable(self.source, self.sample_ids, self.run_dir, record=self.chief)
            self.sample_ids = np.setdiff1d(self.sample_ids, bad)
            self.labelled_ids = np.setdiff1d(self.labelled_ids, bad)
        self._check_labels()
        if len(self.sample_ids) < recipe.train.batch_size:
            raise TrainingError(f"{recipe.data.train}: {len(self.sample_ids)} images, fewer than "
                                f"one batch of {recipe.train.batch_size}")
        import keras

        if recipe.train.batch_size % self.strategy.num_replicas_in_sync:
            raise TrainingError(f"train.batch_size {recipe.train.batch_size} is not divisible by "
                                f"{self.strategy.num_replicas_in_sync} replicas")
        keras.mixed_precision.set_global_policy(
            "mixed_float16" if recipe.train.mixed_precision else "float32")
        cfg = recipe.model
        width = {} if cfg.alpha is None else {"alpha": cfg.alpha}
        with self.strategy.scope():
            self.model = build_embedding_model(
                cfg.backbone, embedding_size=cfg.embedding_size, output_layer=cfg.output_layer,
                dropout=cfg.dropout, bn_momentum=cfg.bn_momentum, bn_epsilon=cfg.bn_epsilon,
                activation=cfg.activation, **width)
            self.classifier = None
            if any(stage.uses_classifier for stage in self.stages):
                self.classifier = CosineClassifier(self.num_classes, sub_centers=cfg.sub_centers,
                                                   name="classifier")
                self.classifier.build((None, cfg.embedding_size))
        if self.strategy.num_replicas_in_sync > 1 and recipe.train.sync_bn:
            from distill.models.registry import set_bn_synchronized

            set_bn_synchronized(self.model)
        keras.mixed_precision.set_global_policy("float32")  # only the student is mixed
        self.eval_sets = self._load_eval_sets()

    def _check_labels(self) -> None:
        unlabelled = len(self.sample_ids) - len(self.labelled_ids)
        for stage in self.stages:
            kinds = stage.kinds_on()
            if "metric" in kinds and unlabelled:
                raise TrainingError(f"stage {stage.index}: metric terms (triplet, center) need every "
                                    f"sample labelled, but {unlabelled} are not (data.min_class_images "
                                    f"or unlabelled rows in {self.recipe.data.train})")
            if kinds & {"classification", "metric"} and self.num_classes < 2:
                raise TrainingError(f"stage {stage.index}: a classification term needs at least two "
                                    f"labelled classes; {self.recipe.data.train} has {self.num_classes} "
                                    f"(set its weight to 0 for distillation alone)")
        if unlabelled:
            log.info("%d of %d samples are unlabelled: only distillation terms see them",
                     unlabelled, len(self.sample_ids))

    def _load_targets(self):
        from distill.store import Store
        from distill.train.targets import open_targets

        uses_teacher = any(stage.uses_teacher for stage in self.stages)
        if not self.recipe.data.store:
            if uses_teacher:
                raise TrainingError("a stage has a term that reads the teacher (distillation, adadistill) "
                                    "with weight > 0 but data.store is not set")
            return None
        targets = open_targets(Store(self.recipe.data.store), self.source, self.recipe.data.targets)
        for note in projection_notes(self.stages, self.recipe.model.embedding_size, targets.dim):
            log.info("%s", note)
        return targets

    def _load_eval_sets(self):
        from distill.evals.bins import load_bin

        return [load_bin(path) for path in self.recipe.data.eval]

    # ------------------------------------------------------------ per stage
    def _stage_variables(self, stage: ResolvedStage, objective):
        import keras

        if stage.bottleneck_only:
            model_vars = [v for layer in self.model.layers if not isinstance(layer, keras.Model)
                          for v in layer.trainable_variables]
        else:
            model_vars = list(self.model.trainable_variables)
        classifier_vars = list(self.classifier.trainable_variables) if self.classifier is not None else []
        return model_vars + classifier_vars + list(objective.trainable_variables)

    def _build_stage(self, stage: ResolvedStage, previous_optimizer=None, previous_objective=None):
        from distill.losses.objective import build_objective
        from distill.train.optim import DECOUPLED, GradientWeightDecay, build_optimizer

        import keras

        from distill.train.step import make_train_step

        opt_cfg, mixed = self.recipe.optimizer, self.recipe.train.mixed_precision
        with self.strategy.scope():
            objective = build_objective(**stage.objective_spec()).build(
                num_classes=self.num_classes, embedding_dim=self.recipe.model.embedding_size,
                teacher_dim=self.targets.dim if self.targets is not None else None)
            self._auto_weights(stage, objective)
            variables = self._stage_variables(stage, objective)
            optimizer = build_optimizer(opt_cfg, stage.lr)
            if mixed:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(variables)
        if previous_optimizer is not None:
            copy_state(previous_optimizer.variables, optimizer.variables)
        if previous_objective is not None:   # loss state (EMA centres, projections) goes on, as on resume
            copy_state(previous_objective.variables, objective.variables)
        optimizer.learning_rate.assign(stage.lr)
        wd = 0.0 if opt_cfg.name in DECOUPLED else opt_cfg.weight_decay
        classifier_vars = self.classifier.trainable_variables if self.classifier is not None else []
        decay = GradientWeightDecay(wd, variables, classifier_vars, opt_cfg.classifier_wd_mult)
        step = make_train_step(self.strategy, self.model, self.classifier, objective, optimizer,
                               variables, decay, mixed, self.recipe.train.gradient_stats, self.recipe.seed)
        return objective, optimizer, step

    # ------------------------------------------------------------------ run
    def run(self, resume: bool, stop_after_epochs: int | None = None) -> TrainResult:
        from distill.train.run_files import clean_run_dir, model_file_matches, save_model_file

        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = load_state(self.run_dir) if resume else None
        if resume and state is None:
            raise TrainingError(f"{self.run_dir}: no checkpoint to resume from")
        if not resume and self.files.state.exists():
            raise TrainingError(f"{self.run_dir}: run directory already holds a run; "
                                "use --resume to continue it or choose a new directory")
        if state is not None:
            check_arrays(self.run_dir)   # a damaged checkpoint is refused now, not after the setup
        self._setup()
        if self.chief:   # only the chief writes into the run directory
            clean_run_dir(self.run_dir)
            save_recipe(self.recipe, self.files.recipe)
        history = state["history"] if state else []
        self.auto_weights, self.new_auto_weights = dict(state.get("auto_weights", {}) if state else {}), {}
        best = state.get("best") if state else None
        start_epoch = state["epochs_done"] if state else 0
        total = self.recipe.total_epochs
        optimizer = objective = step = None
        current = None
        end_epoch = total if stop_after_epochs is None else min(total, start_epoch + stop_after_epochs)
        final, best_path = self.files.final_model, self.files.best_model
        if start_epoch >= end_epoch and state is not None:   # nothing to train: the checkpoint is the model
            restore_variables(self.run_dir, {"model": list(self.model.variables)})
            if model_file_matches(final, self.model):
                log.info("%s: all %d epochs already done", self.run_dir, total)
                return TrainResult(self.run_dir, history, best_path if best_path.exists() else None, final, best)
        for epoch in range(start_epoch, end_epoch):
            stage = stage_of_epoch(self.stages, epoch)
            if stage is not current:
                objective, optimizer, step = self._build_stage(stage, optimizer, objective)
                if state is not None and epoch == start_epoch:
                    restore_variables(self.run_dir, self._checkpoint_groups(objective, optimizer))
                    optimizer.learning_rate.assign(stage.lr)
                current = stage
            record = self._train_epoch(epoch, stage, step, optimizer)
            every = max(self.recipe.train.eval_every_epochs, 1)
            record["eval"] = self._evaluate() if ((epoch + 1) % every == 0 or epoch + 1 == total) else {}
            if self.new_auto_weights:
                record["auto_weights"], self.new_auto_weights = self.new_auto_weights, {}
            history.append(record)
            best = self._keep_best(record, best)
            if self.chief:   # the other workers restore from the chief's checkpoint
                save_checkpoint(self.run_dir, self._checkpoint_groups(objective, optimizer),
                                {"epochs_done": epoch + 1, "history": history, "best": best,
                                 "seed": self.recipe.seed, "auto_weights": self.auto_weights})
                atomic_write_json(self.files.history, history)
                self.scalars.write(record)
            log.info("epoch %d/%d %s", epoch + 1, total, epoch_summary(record))
        if self.chief:
            save_model_file(self.model, final)
        return TrainResult(self.run_dir, history, best_path if best_path.exists() else None, final, best)

    def _checkpoint_groups(self, objective, optimizer) -> dict:
        return {
            "model": list(self.model.variables),
            "classifier": list(self.classifier.variables) if self.classifier is not None else [],
            "objective": list(getattr(objective, "variables", objective.trainable_variables)),
            "optimizer": list(optimizer.variables),
        }

    def _epoch_batches(self, epoch: int, stage: ResolvedStage):
        """``(distributed batches of the epoch, steps)``, the same on every call."""
        from distill.train.distributed import distribute_dataset
        from distill.train.pipeline import sample_order, training_dataset
        from distill.train.unreadable import named_input_errors

        recipe = self.recipe
        ids = self.sample_ids if stage.uses_teacher and recipe.data.use_unlabeled else self.labelled_ids
        sampler, per_identity = sampler_of(recipe, stage), recipe.data.images_per_identity
        dataset = distribute_dataset(self.strategy, lambda share: training_dataset(
            self.source, ids, recipe.train.batch_size, recipe.seed, epoch, recipe.data.augment,
            self.targets if stage.uses_teacher else None, recipe.data.num_parallel_reads,
            per_identity, labels=self.labels, share=share, sampler=sampler))
        order = partial(sample_order, ids, self.labels, recipe.train.batch_size, per_identity, recipe.seed,
                        epoch, sampler)
        batches = named_input_errors(dataset, self.source, order, recipe.train.batch_size, self.targets)
        return batches, len(order()) // recipe.train.batch_size

    def _auto_weights(self, stage: ResolvedStage, objective) -> None:
        """Set the stage's ``weight: auto`` terms: recorded ones (resume) or measured now."""
        from distill.train.auto_weight import calibrate, resolve

        def measure(missing):
            batches, steps = self._epoch_batches(stage.first_epoch, stage)
            return calibrate(self.strategy, self.model, self.classifier, objective, missing, batches,
                             min(steps, self.recipe.train.auto_weight_steps), self.recipe.seed)

        self.new_auto_weights.update(resolve(objective, stage.auto_targets(), self.auto_weights, measure))

    def _train_epoch(self, epoch: int, stage: ResolvedStage, step, optimizer) -> dict:
        from tqdm import tqdm

        from distill.train.schedules import learning_rate

        recipe = self.recipe
        batches, steps = self._epoch_batches(epoch, stage)
        sums: dict[str, float] = {}
        started = time.time()
        bar = tqdm(batches, total=steps, desc=f"epoch {epoch + 1}/{recipe.total_epochs}",
                   disable=not self.progress, leave=False, unit="step")
        step_evals, index = [], -1
        first_lr = learning_rate(recipe.schedule, stage.lr, stage.first_epoch, epoch * steps, steps)
        for index, batch in enumerate(bar):
            global_step = epoch * steps + index
            lr = learning_rate(recipe.schedule, stage.lr, stage.first_epoch, global_step, steps)
            optimizer.learning_rate.assign(lr)
            terms = {k: float(v) for k, v in step(batch).items()}
            bad = [k for k, v in terms.items() if not math.isfinite(v)]
            if bad:
                raise TrainingError(
                    f"non-finite loss at epoch {epoch + 1}, step {index + 1} (stage {stage.index}): "
                    + ", ".join(f"{k}={v}" for k, v in terms.items()))
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix(loss=f"{terms['total']:.3f}")
            every = recipe.train.eval_every_steps
            if every and (global_step + 1) % every == 0 and index + 1 < steps:
                step_evals.append({"step": global_step + 1, "eval": self._evaluate()})
        means = {k: v / max(index + 1, 1) for k, v in sums.items()}
        record = {"epoch": epoch + 1, "stage": stage.index, "lr": first_lr,
                  "loss": {k: v for k, v in means.items() if not k.startswith("grad")},
                  "steps": index + 1, "seconds": round(time.time() - started, 2),
                  "params": int(self.model.count_params())}
        grads = {k: v for k, v in means.items() if k.startswith("grad")}
        if grads:
            record["gradients"] = grads
        if step_evals:
            record["step_evals"] = step_evals
        return record

    def _evaluate(self) -> dict:
        if not self.eval_sets or not self.chief:
            return {}
        from distill.evals.verification import evaluate_sets, keras_embed_fn

        embed_fn = keras_embed_fn(self.model, batch_size=self.recipe.train.eval_batch_size)
        results = evaluate_sets(embed_fn, self.eval_sets, batch_size=self.recipe.train.eval_batch_size,
                                flip=self.recipe.train.eval_flip)
        return {name: {k: float(metrics[k]) for k in EVAL_KEYS if k in metrics}
                for name, metrics in results.items()}

    def _keep_best(self, record: dict, best: dict | None) -> dict | None:
        evals = record["eval"]
        if not evals:
            return best
        name = self.recipe.train.best_by or next(iter(evals))
        if name not in evals:
            raise TrainingError(f"train.best_by={name!r} is not an eval set ({', '.join(evals)})")
        accuracy = evals[name]["accuracy"]
        if best is None or accuracy > best["accuracy"]:
            from distill.train.run_files import save_model_file

            save_model_file(self.model, self.files.best_model, check=False)
            best = {"set": name, "accuracy": accuracy, "epoch": record["epoch"]}
        return best


def training_labels(labels: np.ndarray, sample_ids: np.ndarray, min_class_images: int = 1):
    """``(labels by sample_id, number of classes)`` for training: classes with fewer than
    ``min_class_images`` of ``sample_ids`` become unlabelled (−1), the others are numbered
    0…C−1 in their original order; samples already unlabelled (−1) stay so."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels[sample_ids][labels[sample_ids] >= 0], minlength=max(int(labels.max()) + 1, 1))
    kept = np.flatnonzero(counts >= max(int(min_class_images), 1))
    mapping = np.full(counts.size + 1, -1, dtype=np.int64)   # last entry: label −1 stays −1
    mapping[kept] = np.arange(kept.size)
    return mapping[np.where(labels >= 0, labels, counts.size)], int(kept.size)
