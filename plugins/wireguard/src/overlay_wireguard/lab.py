"""Lab extras for ``overlay-core lab up --backend wireguard`` (entry point group ``overlay.lab``).

Every lab node runs its own agent on the same machine: each gets its own private key file in its
node directory (``WIREGUARD_KEY_FILE``), so the nodes do not share one identity in
``/run/flannel/wgkey``. Their wireguard-go sockets are kept apart by the agent itself (the lab gives
each node its own ``--state-dir``, see ``backend.socket_dir``).
"""

from __future__ import annotations

import os


def node_env(lab, node) -> dict[str, str]:
    return {"WIREGUARD_KEY_FILE": os.path.join(lab.node_dir(node), "wgkey")}
