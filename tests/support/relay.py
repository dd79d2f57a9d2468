"""A TCP relay on loopback that can black-hole its traffic: what a network partition
does to a replication link (nothing arrives, nothing is refused), which SIGSTOP cannot
show (data already sent waits in the stopped process's socket buffer and arrives
after SIGCONT)."""

import socket
import threading

from tests.support.ports import free_port


class Relay:
    """Forwards connections from its own port to `target_port`, both ways, until cut()."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.cut_off = threading.Event()
        self.sockets = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.forward, args=(source, sink), daemon=True).start()

    def forward(self, source, sink):
        try:
            while data := source.recv(65536):
                if self.cut_off.is_set():
                    continue  # swallowed: the partition
                sink.sendall(data)
        except OSError:
            pass
        if not self.cut_off.is_set():
            sink.close()

    def cut(self):
        """From now on nothing passes either way; connections stay open."""
        self.cut_off.set()

    def drop(self):
        """Close every connection and stop listening; what was swallowed is lost."""
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                sock.close()
