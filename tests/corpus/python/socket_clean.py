"""Clean twin of socket_leak.py: every connection is closed."""
import socket
import time

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()


def ping():
    with socket.create_connection(server.getsockname()) as client:
        conn, _ = server.accept()
        conn.close()
        return client.getsockname()


for _ in range(3):
    ping()
time.sleep(0.5)
server.close()
