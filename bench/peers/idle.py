"""Opens N idle TCP connections to HOST:PORT, prints 'ready', holds them until stdin closes."""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = []
for _ in range(n):
    s = socket.create_connection((host, port))
    conns.append(s)
print("ready", flush=True)
sys.stdin.read()
