import overlay_core


def test_public_api_is_pinned():
    assert overlay_core.__all__ == [
        "Backend", "BackendNotFoundError", "ConfigError", "ExternalInterface", "InterfaceError",
        "KernelBackend", "KernelFeatureMissingError", "Lease", "LeaseAttrs", "LeaseRequest", "NetworkConfig", "Node",
        "OverlayError", "PeerPlan", "StoreError", "SubnetsExhaustedError", "__version__", "hookimpl", "parse_config",
    ]
    for name in overlay_core.__all__:
        assert hasattr(overlay_core, name)
