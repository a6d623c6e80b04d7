"""The jobs behind the command-line entry points: train, evaluate, predict, check."""
