"""extension against the conformance kit (overlay_core.testing.kit), with the lab's shell-command
host-gw (``overlay_extension.lab``). Its Capabilities exempt it from the restart check (commands
run again at every start) and the drift check (nothing to ask a shell command)."""

from overlay_core.testing.kit import Conformance


class TestConformance(Conformance):
    backend = "extension"
