"""Published ports (`ports: 127.0.0.1:HOST:CONTAINER`), as Docker's proxy does them: a listener
on the host address and port that forwards each connection to the container's port. A host port
already in use fails the start, as compose does ("port is already allocated")."""

from __future__ import annotations

import socket
import threading

from .compose import ComposeError, Port


class Publisher:
    def __init__(self):
        self.listeners: list[socket.socket] = []
        self.published: list[dict] = []
        self.closed = threading.Event()

    def publish(self, service: str, port: Port, address: str) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((port.host_ip, port.host_port))
        except OSError as error:
            listener.close()
            raise ComposeError(f"{service}: cannot publish {port.host_ip}:{port.host_port} → {port.container_port}: "
                               f"{error.strerror} (set the port variable in the environment, as with compose)")
        listener.listen(128)
        self.listeners.append(listener)
        self.published.append({"service": service, "host": f"{port.host_ip}:{port.host_port}",
                               "container_port": port.container_port})
        threading.Thread(target=self.accept, args=(listener, (address, port.container_port)), daemon=True).start()

    def accept(self, listener: socket.socket, target: tuple[str, int]) -> None:
        while not self.closed.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self.forward, args=(client, target), daemon=True).start()

    @staticmethod
    def forward(client: socket.socket, target: tuple[str, int]) -> None:
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)

        def pipe(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for s in (source, sink):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)
        client.close()
        upstream.close()

    def close(self) -> None:
        self.closed.set()
        for listener in self.listeners:
            listener.close()
