"""overlay-udp: Flannel's udp wire format with a batched, offload-assisted userspace data path.

Modules: ``packet`` (pure packet surgery), ``routes`` (immutable route table), ``tun`` (flannel0),
``datapath`` (the forwarding loops), ``mmsg`` (recvmmsg/sendmmsg), ``control`` (control channel
clients) and ``forwarder`` (the process: ``python -m overlay_udp.forwarder``).
"""

__version__ = "0.1.0"
