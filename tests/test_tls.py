"""TLS on the TCP listeners (listen.tls.cert, key, ca).

Certificates are made at test time with the openssl command line: a test
CA, a server certificate for 127.0.0.1/localhost, a client certificate from
the same CA, and a client certificate from an unrelated CA. Clients are
Python's ssl module and `openssl s_client`.
"""

import os
import ssl
import subprocess
import time

import msgpack
import pytest

from helpers import packb, session_event, uuid7
from opshelpers import admin_daemon, m, metrics
from tlsauth import KEY, TlsClient, authenticate, client_context, tls_conf


def event(mg_id):
    return session_event(mg_id, "over tls")


def send_sessions(c, ids, chunk):
    """Session events IDS in one message asking for ack CHUNK; checks the ack."""
    now = int(time.time())
    c.send_raw(packb(["mega.session", [[now, event(i)] for i in ids], {"chunk": chunk}]))
    assert c.recv_value(timeout=10) == {"ack": chunk}


def test_python_ssl_client(daemon_factory, pg, certs):
    d = daemon_factory(tls_conf(certs))
    ids = [uuid7() for _ in range(3)]
    with TlsClient(d, client_context(certs)) as c:
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        send_sessions(c, ids, "tls-1")
    assert pg.count("mg_id = ANY(%s)", (ids,)) == 3
    d.wait_log(r"TLS established: TLSv1\.[23] ")


def test_tls12_client(daemon_factory, pg, certs):
    d = daemon_factory(tls_conf(certs))
    ctx = client_context(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    mg_id = uuid7()
    with TlsClient(d, ctx) as c:
        assert c.sock.version() == "TLSv1.2"
        send_sessions(c, [mg_id], "tls12")
    assert pg.count("mg_id = %s", (mg_id,)) == 1


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # on purpose
def test_tls11_is_refused(daemon_factory, pg, certs):
    d = daemon_factory(tls_conf(certs))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        TlsClient(d, ctx).close()
    d.wait_log(r"TLS handshake failed: .*(unsupported protocol|version)")


def test_plaintext_client_on_tls_port_is_closed(daemon_factory, pg, certs):
    d = admin_daemon(daemon_factory, tls_conf(certs))
    mg_id = uuid7()
    with d.connect("tcp") as c:
        c.send_msgpack(event(mg_id))
        assert c.wait_closed(5)
    d.wait_log(r"TLS handshake failed")
    assert pg.count("mg_id = %s", (mg_id,)) == 0
    assert m(metrics(d.admin_port), "tls_failures_total") == 1


def test_silent_client_is_cut_at_handshake_timeout(daemon_factory, certs):
    """A TCP connection that never starts TLS is closed after
    listen.handshake_timeout_s, not after idle_timeout_s."""
    d = admin_daemon(daemon_factory, tls_conf(certs, handshake_timeout_s=1), ready=False)
    with d.connect("tcp") as c:
        assert c.wait_closed(5)
    d.wait_log(r"handshake not finished within listen.handshake_timeout_s=1 s")
    assert m(metrics(d.admin_port), "handshake_timeouts_total") == 1


def test_unix_socket_stays_plain(daemon_factory, pg, certs):
    d = daemon_factory(tls_conf(certs))
    mg_id = uuid7()
    d.forward_chunk("mega.session", [[int(time.time()), event(mg_id)]], "unix")
    assert pg.count("mg_id = %s", (mg_id,)) == 1


def s_client(d, certs, *extra):
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{d.tcp_port}",
           "-CAfile", certs["ca"][0], "-verify_return_error", "-servername", "localhost",
           "-quiet"] + list(extra)
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_openssl_s_client(daemon_factory, pg, certs):
    d = daemon_factory(tls_conf(certs))
    mg_id = uuid7()
    p = s_client(d, certs)
    try:
        p.stdin.write(packb(["mega.session", [[int(time.time()), event(mg_id)]],
                             {"chunk": "s_client"}]))
        p.stdin.flush()
        reply = msgpack.Unpacker(raw=False)
        while True:
            data = os.read(p.stdout.fileno(), 4096)
            assert data, "s_client saw EOF before the ack: " + p.stderr.read1().decode()
            reply.feed(data)
            got = next(reply, None)
            if got is not None:
                break
        assert got == {"ack": "s_client"}
    finally:
        p.kill()
        p.communicate()     # reaps it and closes its pipes
    assert pg.count("mg_id = %s", (mg_id,)) == 1


def test_openssl_s_client_tls11_refused(daemon_factory, certs):
    d = daemon_factory(tls_conf(certs))
    p = s_client(d, certs, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    try:
        out, err = p.communicate(timeout=10)
    finally:
        p.kill()
    assert p.returncode != 0
    d.wait_log(r"TLS handshake failed")


def test_client_certificate_required(daemon_factory, pg, certs):
    d = daemon_factory(tls_conf(certs, ca=True))
    mg_id = uuid7()
    with TlsClient(d, client_context(certs, "client")) as c:
        send_sessions(c, [mg_id], "with-cert")
    assert pg.count("mg_id = %s", (mg_id,)) == 1
    d.wait_log(r"TLS established: .*client=.*CN\s*=\s*app-backend-1")


@pytest.mark.parametrize("cert", [None, "rogue"])
def test_missing_or_foreign_client_certificate_refused(daemon_factory, pg, certs, cert):
    d = daemon_factory(tls_conf(certs, ca=True))
    mg_id = uuid7()
    with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
        # With TLS 1.3 the client learns of the refusal on its first read.
        with TlsClient(d, client_context(certs, cert)) as c:
            c.send_raw(packb(["mega.session", [[int(time.time()), event(mg_id)]],
                              {"chunk": "nope"}]))
            c.recv_value(timeout=5)
    d.wait_log(r"TLS handshake failed: .*(peer did not return a certificate|"
               r"certificate verify failed|certificate required)")
    assert pg.count("mg_id = %s", (mg_id,)) == 0


def test_tls_and_shared_key_together(daemon_factory, pg, certs):
    d = daemon_factory(tls_conf(certs, shared_key=KEY))
    mg_id = uuid7()
    with TlsClient(d, client_context(certs)) as c:
        authenticate(c)
        send_sessions(c, [mg_id], "both")
    assert pg.count("mg_id = %s", (mg_id,)) == 1


@pytest.mark.parametrize("what", ["missing-cert", "key-mismatch", "missing-ca"])
def test_bad_tls_files_stop_the_start(daemon_factory, certs, tmp_path, what):
    tls = {"cert": certs["server"][0], "key": certs["server"][1]}
    if what == "missing-cert":
        tls["cert"] = str(tmp_path / "nope.crt")
    elif what == "key-mismatch":
        tls["key"] = certs["client"][1]
    else:
        tls["ca"] = str(tmp_path / "nope-ca.crt")
    d = daemon_factory({"listen": {"tls": tls}}, wait=False)
    d.expect_failure = True
    assert d.wait_exit(30) == 1
    key = {"missing-cert": "cert", "key-mismatch": "key", "missing-ca": "ca"}[what]
    assert d.log_contains(rf"listen\.tls\.{key} \""), d.log()
