"""Leaks sockets: a client connection to a loopback server, never closed (ResourceWarning:
unclosed socket)."""
import socket
import time

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()


def ping():
    client = socket.create_connection(server.getsockname())  # never closed
    conn, _ = server.accept()
    conn.close()
    return client.getsockname()


for _ in range(3):
    ping()
time.sleep(0.5)
server.close()
