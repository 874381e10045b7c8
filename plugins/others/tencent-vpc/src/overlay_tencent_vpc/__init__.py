"""overlay backend 'tencent-vpc': this node's subnet routed through a TencentCloud VPC route table.

Modules: ``options`` (the Backend options), ``metadata`` (region, MAC, VPC id of the instance),
``cloud`` (the VPC API through the official SDK, with retries), ``routes`` (the own route as a
reconcile target), ``backend`` (the ``Backend`` class, entry point ``tencent-vpc``), ``testing`` (a
local fake of the VPC API and the metadata service), ``lab`` (the lab's VPC router, entry point
group ``overlay.lab``).
"""

from .cloud import RetryPolicy, VpcApi, VpcApiError, VpcAuthError, VpcUnavailableError
from .metadata import InstanceMetadata, MetadataError, read_instance_metadata
from .options import TencentOptions, parse_options
from .routes import VpcRoute, VpcRouteTarget

__all__ = [
    "InstanceMetadata",
    "MetadataError",
    "RetryPolicy",
    "TencentOptions",
    "VpcApi",
    "VpcApiError",
    "VpcAuthError",
    "VpcRoute",
    "VpcRouteTarget",
    "VpcUnavailableError",
    "parse_options",
    "read_instance_metadata",
]
