"""hetflow's engine: tasks, store, scheduler, executors. Kept import-light: the runner's workers import it."""

__version__ = "0.1.0"
