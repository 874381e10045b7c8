"""Operator commands: ``overlay-core status``, ``doctor`` and ``cleanup``.

Each takes ``run``'s flags and ``FLANNELD_*`` variables (the same health address, store, state
dir and subnet file), so an operator copies the agent's command line and changes the verb.
"""
