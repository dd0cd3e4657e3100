"""The student stage: recipes, schedules, optimizers, the trainer and checkpoints.

``distill.train(recipe, ...)`` is :func:`distill.train.trainer.train` whether ``distill.train``
is reached as the package attribute or as this module (see ``make_module_callable``).
"""
from distill.utils import make_module_callable

make_module_callable(__name__, "distill.train.trainer:train")
