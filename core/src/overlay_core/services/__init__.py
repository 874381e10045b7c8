"""Services core gives backends: tasks, supervised helpers, dedicated threads, files and secrets.

Each lives in its own module; the names a backend uses are re-exported here.
"""

from .bundle import Services
from .files import atomic_write, load_or_create_secret
from .secret import Secret
from .supervise import Helper, ProcessSpec, Supervisor
from .tasks import TaskGroup
from .threads import DedicatedThread, StopSignal, Swappable, Worker, run_worker

__all__ = [
    "DedicatedThread",
    "Helper",
    "ProcessSpec",
    "Secret",
    "Services",
    "StopSignal",
    "Supervisor",
    "Swappable",
    "TaskGroup",
    "Worker",
    "atomic_write",
    "load_or_create_secret",
    "run_worker",
]
