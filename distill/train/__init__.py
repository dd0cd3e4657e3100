"""The student stage: recipes, schedules, optimizers, the trainer and checkpoints."""
