"""tlsauth: the client side of the Forward handshake and of TLS, shared by
the tests of authentication, TLS, replay, limits and hardening.

Handshake (written from Fluentd's Forward Protocol Specification v1,
"Handshake Messages", not from the daemon's code):
  KEY                 the shared key the tests configure
  read_helo(c)        the server's HELO, checked; its nonce
  ping(nonce)         the PING the spec builds; (message, salt)
  check_pong_ok(...)  a PONG true whose digest proves the server knows the key
  authenticate(c)     all three on client C

TLS (certificates made at test time with the openssl command line):
  make_pki(d)         a CA, a server certificate for 127.0.0.1/localhost, a
                      client certificate from that CA, a rogue one from
                      another CA (the `certs` fixture of conftest.py)
  make_ca, make_cert  the pieces, for a test that needs its own PKI
  tls_conf(certs)     the daemon's listen.tls section
  client_context      an ssl.SSLContext trusting the test CA
  TlsClient(d, ctx)   a helpers.Client over TLS to D's TCP listener
"""

import hashlib
import os
import re
import ssl
import subprocess

from helpers import Client, packb

KEY = "s3cret-shared-key"

# ---- the Forward handshake --------------------------------------------------


def sha512_hex(*parts):
    h = hashlib.sha512()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
    return h.hexdigest()


def read_helo(c):
    helo = c.recv_value(timeout=5)
    assert isinstance(helo, list) and len(helo) == 2 and helo[0] == "HELO", helo
    opts = helo[1]
    assert isinstance(opts["nonce"], bytes) and len(opts["nonce"]) == 16, opts
    assert opts["keepalive"] is True, opts
    assert opts["auth"] == "", opts
    return opts["nonce"]


def ping(nonce, key=KEY, host="client.example", salt=None):
    """The PING for NONCE as the spec builds it; returns (message, salt)."""
    salt = salt if salt is not None else os.urandom(16)
    digest = sha512_hex(salt, host, nonce, key)
    return ["PING", host, salt, digest, "", ""], salt


def check_pong_ok(pong, nonce, salt, key=KEY):
    assert isinstance(pong, list) and len(pong) == 5, pong
    assert pong[0] == "PONG" and pong[1] is True and pong[2] == "", pong
    server_host, digest = pong[3], pong[4]
    assert isinstance(server_host, str) and server_host, pong
    assert re.fullmatch(r"[0-9a-f]{128}", digest), pong
    assert digest == sha512_hex(salt, server_host, nonce, key)


def authenticate(c, key=KEY):
    """Run the handshake on client C; return the raw PING bytes sent."""
    nonce = read_helo(c)
    msg, salt = ping(nonce, key)
    raw = packb(msg)
    c.send_raw(raw)
    check_pong_ok(c.recv_value(timeout=5), nonce, salt, key)
    return raw


# ---- a test PKI ---------------------------------------------------------------

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def make_ca(d, name):
    openssl("req", "-x509", *EC_KEY, "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN=megaingest test {name}", cwd=d)


def make_cert(d, name, ca, cn, ext, newkey=EC_KEY):
    """NAME.crt and NAME.key in D, signed by CA, with extensions EXT."""
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(ext + "\n")
    openssl("req", *newkey, "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
            "-extfile", f"{name}.ext", cwd=d)


SERVER_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"


def make_pki(d):
    """{name: (cert path, key path)} for ca, otherca, server, client (from
    ca) and rogue (from otherca), made in directory D."""
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_cert(d, "server", "ca", "localhost", SERVER_EXT)
    make_cert(d, "client", "ca", "app-backend-1", "extendedKeyUsage=clientAuth")
    make_cert(d, "rogue", "otherca", "rogue-client", "extendedKeyUsage=clientAuth")
    return {name: (os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"))
            for name in ("ca", "otherca", "server", "client", "rogue")}


def tls_conf(certs, ca=False, **listen):
    tls = {"cert": certs["server"][0], "key": certs["server"][1]}
    if ca:
        tls["ca"] = certs["ca"][0]
    return {"listen": dict(tls=tls, **listen), "log": {"level": "debug"}}


def client_context(certs, cert=None):
    ctx = ssl.create_default_context(cafile=certs["ca"][0])
    if cert:
        ctx.load_cert_chain(*certs[cert])
    return ctx


class TlsClient(Client):
    """A helpers.Client over TLS (context CTX) to daemon D's TCP listener,
    checking the server's certificate for "localhost"."""

    def __init__(self, d, ctx, timeout=10):
        super().__init__(("127.0.0.1", d.tcp_port), tls=ctx, timeout=timeout)
