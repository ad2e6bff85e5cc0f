"""conn_guard (the admin endpoint's and the HTTP input's connection cap)
counts a connection until evhttp frees it, also while evhttp is writing
an answer to a client that reads it slowly: evhttp clears the connection's
read callback while it writes, which is no sign of a closed connection."""

import socket
import time

from opshelpers import admin_daemon, admin_get
from test_attacks import closed_within


def slow_reader(port, path, times):
    """A connection that asks for PATH TIMES times at once (pipelined) and
    reads none of the answers: with a small receive buffer, once the
    kernel's send buffer is full the daemon stays in the middle of writing
    one of them."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode() * times)
    return s


def assert_cap_holds(port, held, what):
    """With HELD (connections mid-answer) open past two sweeps of the guard
    (one a second), one more connection to PORT is closed at once."""
    try:
        time.sleep(2.5)
        extra = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            assert closed_within(extra, 3), f"{what} was kept open"
        finally:
            extra.close()
    finally:
        for s in held:
            s.close()


def test_connections_mid_answer_still_count_toward_the_cap(daemon_factory):
    """16 admin connections (the cap), each in the middle of its answers
    (8 MiB of them, more than the socket buffers hold): past two sweeps
    (one a second) a 17th connection is still closed at once."""
    d = admin_daemon(daemon_factory)
    status, _, page = admin_get(d.admin_port, "/metrics")
    assert status == 200, page
    times = 8 * 1024 * 1024 // len(page) + 1
    held = [slow_reader(d.admin_port, "/metrics", times) for _ in range(16)]
    assert_cap_holds(d.admin_port, held, "a 17th admin connection")
    # and once they are gone, the endpoint serves again
    deadline = time.monotonic() + 10
    while True:
        try:
            if admin_get(d.admin_port, "/healthz")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the admin endpoint did not serve again"
        time.sleep(0.1)


def test_http_input_connections_mid_answer_still_count(daemon_factory, pg):
    """http.max_connections 3, three connections each in the middle of
    writing 8 MiB of pipelined 404 answers: a fourth is closed at once,
    also after two sweeps."""
    from test_http import http_daemon
    d = http_daemon(daemon_factory, {"max_connections": 3})
    probe = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
    probe.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := probe.recv(65536):
        answer += chunk
    probe.close()
    assert answer.startswith(b"HTTP/1.1 404"), answer
    held = [slow_reader(d.http_port, "/nope", 8 * 1024 * 1024 // len(answer) + 1)
            for _ in range(3)]
    assert_cap_holds(d.http_port, held, "a fourth HTTP connection")
