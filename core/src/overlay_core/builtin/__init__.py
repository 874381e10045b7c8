"""Built-in plugins: features of the agent registered like any third-party plugin.

Each is a small class with hook implementations and a ``ready`` flag the agent's readiness
waits for. They get what they need injected (options, services, metrics); the agent only
creates and registers them.
"""

from .blackhole import BlackholeRoutes
from .firewall import FirewallRules
from .subnet_env import SubnetFile

__all__ = ["BlackholeRoutes", "FirewallRules", "SubnetFile"]
