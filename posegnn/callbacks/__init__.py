"""Lightning and Hydra callbacks: validation AP, prediction figures, the run's settings
in checkpoints, preemption, and each sweep job's status."""
