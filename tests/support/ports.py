"""Free TCP ports for servers started on loopback."""

import socket


def free_port(*hosts: str) -> int:
    """A TCP port free on every one of the hosts (127.0.0.1 when none is given)."""
    hosts = hosts or ("127.0.0.1",)
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no port free on all of {', '.join(hosts)}")


def port_opens(host: str, port: int) -> bool:
    """True once something accepts TCP connections on host:port."""
    socket.create_connection((host, port), timeout=0.5).close()
    return True
