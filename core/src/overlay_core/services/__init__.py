"""Services core gives backends: tasks, supervised helpers, dedicated threads, files and secrets.

Each lives in its own module; the names a backend uses are re-exported here.
"""

from .files import atomic_write, load_or_create_secret
from .secret import Secret
from .tasks import TaskGroup
from .threads import DedicatedThread, StopSignal, Swappable, Worker, run_worker

__all__ = [
    "DedicatedThread",
    "Secret",
    "StopSignal",
    "Swappable",
    "TaskGroup",
    "Worker",
    "atomic_write",
    "load_or_create_secret",
    "run_worker",
]
