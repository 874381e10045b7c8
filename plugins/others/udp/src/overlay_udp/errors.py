"""The forwarder's one error type.

The forwarder process does not import ``overlay_core`` (that would pull trio, pyroute2 and the
rest into every node's forwarder: ~20 MB of resident memory); the backend glue turns a
forwarder that exits with this one-line message into the core's error types.
"""


class ForwarderError(Exception):
    """What is wrong and what to do, in one line; the forwarder prints it and exits with status 1."""
