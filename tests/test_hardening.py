"""Defaults that must not leak: the PostgreSQL password in the log, spool
files readable by the group, weak TLS 1.2 suites, an unprotected listener
nobody is told about, and --print-config hiding every secret.

Each test runs the real daemon (or its -t / --print-config) and reads what
it wrote: its whole log, the modes of the files it made, what `openssl
s_client` could negotiate.
"""

import os
import re
import socket
import stat
import subprocess

import pytest
import yaml

from helpers import MEGAINGESTD, to_yaml, wait_for
from test_cli import GOOD, megaingestd, write
from tlsauth import SERVER_EXT, make_ca, make_cert, tls_conf

# A password libpq cannot decode in a URI: "%zz" is not a percent-escape.
BAD_PW = "Pw%zzSecret42"


def bad_uri(pg):
    return f"postgresql://megaingest:{BAD_PW}@/mega?host={pg.sockdir}&port={pg.port}"


def secret_parts(pw):
    """Pieces of PW that a partial echo would still show."""
    return [pw, pw.replace("%zz", ""), "Secret42"]


def assert_no_secret(text, pw=BAD_PW):
    for part in secret_parts(pw):
        assert part not in text, f"{part!r} leaked:\n{text}"


# ---- item: the PostgreSQL password never reaches the log ---------------------

def test_check_config_refuses_a_conninfo_libpq_cannot_parse(tmp_path, pg):
    path = write(tmp_path, to_yaml({**GOOD, "postgres": {"conninfo": bad_uri(pg)}}) + "\n")
    r = megaingestd("-t", "-c", path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(r"postgres\.conninfo: .*\"password\".*percent", out), out
    assert_no_secret(out)


@pytest.mark.parametrize("conninfo,pw", [
    ("host=/nonexistent-mi user=u password=two words dbname=x", "two words"),
    ("host=/nonexistent-mi password='unterminated-Secret42", "unterminated-Secret42"),
    ("postgresql://u@/db?host=/nonexistent-mi&password=q%zzSecret42", "q%zzSecret42"),
    ("host=/nonexistent-mi password=first x=Secret42", "Secret42"),
    ("postgresql://u:first@Secret42@/db?host=/nonexistent-mi", "Secret42"),
])
def test_check_config_names_the_keyword_never_the_password(tmp_path, conninfo, pw):
    path = write(tmp_path, to_yaml({**GOOD, "postgres": {"conninfo": conninfo}}) + "\n")
    r = megaingestd("-t", "-c", path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "postgres.conninfo" in out, out
    for part in (pw, pw.split()[-1]):
        assert part not in out, f"{part!r} leaked:\n{out}"


def test_bad_conninfo_refused_at_start_and_never_logged(daemon_factory, pg):
    d = daemon_factory({"postgres": {"conninfo": bad_uri(pg)}}, wait=False)
    d.expect_failure = True
    try:
        code = d.wait_exit(15)
    except AssertionError:
        code = None     # still running: the writer connected and logged libpq's error
    log = d.log()
    assert_no_secret(log)
    assert code == 1, log
    assert re.search(r"postgres\.conninfo: .*\"password\"", log), log


def test_reload_with_a_bad_conninfo_is_refused_without_the_password(daemon, pg):
    daemon.config["postgres"]["conninfo"] = bad_uri(pg)
    daemon.write_config()
    daemon.sighup()
    daemon.wait_log(r"reload of .* failed")
    log = daemon.log()
    assert_no_secret(log)
    assert re.search(r"postgres\.conninfo: .*\"password\"", log), log


def test_a_good_conninfo_is_still_accepted(tmp_path, pg):
    ok = f"postgresql://megaingest:good%25pw@/mega?host={pg.sockdir}&port={pg.port}"
    path = write(tmp_path, to_yaml({**GOOD, "postgres": {"conninfo": ok}}) + "\n")
    r = megaingestd("-t", "-c", path)
    assert r.returncode == 0, r.stdout + r.stderr
    path = write(tmp_path, to_yaml({**GOOD, "postgres": {"conninfo": "mega"}}) + "\n")
    r = megaingestd("-t", "-c", path)      # a bare name is a dbname to libpq
    assert r.returncode == 0, r.stdout + r.stderr


# ---- item: spool files 0600, a new spool directory 0700, whatever the umask ---

def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_spool_files_are_private_whatever_the_umask(stoppable_pg, stoppable_daemon_factory,
                                                    umask):
    stoppable_pg.stop_immediate()       # so batches are spooled
    old = os.umask(umask)
    try:
        d = stoppable_daemon_factory({"writer": {"retry_initial_ms": 50,
                                                 "retry_max_ms": 1000}})
    finally:
        os.umask(old)
    with d.connect() as c:
        c.forward_chunk("mega.generation",
                        [[1700000000, {"mg_id": "modes-1", "mg_pass_id": "pass-1"}]], "m1")
        c.send_msgpack({"not": "an event"})         # a dead letter
    d.wait_dead_letter(lambda x: True)
    segs = wait_for(lambda: [f for f in os.listdir(d.spool_dir) if f.startswith("spool-")],
                    what="a spool segment")
    found = {"spool.dir": mode(d.spool_dir),
             "dead-letter.jsonl": mode(d.dead_letter_path())}
    found.update({s: mode(os.path.join(d.spool_dir, s)) for s in segs})
    want = {k: 0o700 if k == "spool.dir" else 0o600 for k in found}
    assert found == want, {k: oct(v) for k, v in found.items()}


def test_existing_open_spool_dir_is_reported(daemon_factory, tmp_path):
    spool = tmp_path / "shared-spool"
    spool.mkdir()
    os.chmod(spool, 0o755)
    d = daemon_factory({"spool": {"dir": str(spool)}})
    line = d.wait_log(r"warn .*spool\.dir .*0755")
    assert str(spool) in line, line
    assert mode(spool) == 0o755     # an existing directory is the operator's: not changed


# ---- item: TLS 1.2 only with ECDHE and AEAD, by default ------------------------

@pytest.fixture(scope="module")
def rsa_certs(tmp_path_factory):
    """A CA and an RSA server certificate (RSA key exchange needs an RSA key)."""
    d = str(tmp_path_factory.mktemp("rsapki"))
    make_ca(d, "ca")
    make_cert(d, "server", "ca", "localhost", SERVER_EXT, newkey=["-newkey", "rsa:2048"])
    os.chmod(os.path.join(d, "server.key"), 0o600)
    return {name: (os.path.join(d, f"{name}.crt"), os.path.join(d, f"{name}.key"))
            for name in ("ca", "server")}


def handshake(d, certs, cipher):
    """s_client -tls1_2 offering only CIPHER: the suite agreed on, or None."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{d.tcp_port}",
                        "-CAfile", certs["ca"][0], "-servername", "localhost", "-brief",
                        "-tls1_2", "-cipher", cipher], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=30)
    got = re.search(r"Ciphersuite: (\S+)", r.stdout)
    return got.group(1) if r.returncode == 0 and got else None


def test_tls12_refuses_weak_suites_by_default(daemon_factory, rsa_certs):
    d = daemon_factory(tls_conf(rsa_certs))
    got = {c: handshake(d, rsa_certs, c) for c in
           ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA",
            "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-RSA-CHACHA20-POLY1305")}
    assert got == {"AES128-SHA": None, "AES256-GCM-SHA384": None,
                   "ECDHE-RSA-AES128-SHA": None, "ECDHE-RSA-AES128-SHA256": None,
                   "ECDHE-RSA-AES128-GCM-SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
                   "ECDHE-RSA-CHACHA20-POLY1305": "ECDHE-RSA-CHACHA20-POLY1305"}, got


def test_tls12_ciphers_are_configurable(daemon_factory, rsa_certs):
    conf = tls_conf(rsa_certs)
    conf["listen"]["tls"]["ciphers"] = "ECDHE-RSA-AES256-GCM-SHA384:AES128-SHA"
    d = daemon_factory(conf)
    assert handshake(d, rsa_certs, "AES128-SHA") == "AES128-SHA"
    assert handshake(d, rsa_certs, "ECDHE-RSA-AES128-GCM-SHA256") is None


def test_bad_cipher_list_fails_check(tmp_path):
    path = write(tmp_path, "listen:\n  tls:\n    ciphers: \"NO-SUCH-CIPHER\"\n")
    r = megaingestd("-t", "-c", path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(r":3:\d+: listen\.tls\.ciphers: expected an OpenSSL cipher list", out), out


@pytest.mark.parametrize("key_mode,warned", [(0o644, True), (0o640, True), (0o600, False)])
def test_readable_private_key_is_reported(daemon_factory, rsa_certs, tmp_path, key_mode,
                                          warned):
    key = tmp_path / "server.key"
    with open(rsa_certs["server"][1], "rb") as f:
        key.write_bytes(f.read())
    os.chmod(key, key_mode)
    conf = tls_conf(rsa_certs)
    conf["listen"]["tls"]["key"] = str(key)
    path = write(tmp_path, to_yaml({**GOOD, **conf}) + "\n", name="t.yaml")
    r = megaingestd("-t", "-c", path)
    rx = re.compile(r"warn .*listen\.tls\.key " + re.escape(str(key)) + rf" .*{key_mode:04o}")
    assert r.returncode == 0 and bool(rx.search(r.stderr)) == warned, r.stdout + r.stderr
    d = daemon_factory(conf)
    assert bool(d.log_contains(rx.pattern)) == warned, d.log()


# ---- item: an exposed listener is named at -t and at start -------------------

def exposed_conf(port, admin_port, **listen):
    return {"listen": {"tcp": [f"0.0.0.0:{port}", "127.0.0.1:1"], **listen},
            "admin": {"http": f"0.0.0.0:{admin_port}"}}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_exposed_listener_and_admin_are_named(daemon_factory, tmp_path):
    port, admin = free_port(), free_port()
    conf = exposed_conf(port, admin)
    path = write(tmp_path, to_yaml({**GOOD, **conf}) + "\n", name="t.yaml")
    r = megaingestd("-t", "-c", path)
    assert r.returncode == 0, r.stdout + r.stderr
    for text in (r.stderr,):
        assert re.search(rf"warn .*listen\.tcp 0\.0\.0\.0:{port} .*no listen\.shared_key "
                         r"and no TLS", text), text
        assert re.search(rf"warn .*admin\.http 0\.0\.0\.0:{admin} ", text), text
        assert "127.0.0.1:1 " not in text, text
    d = daemon_factory({"listen": {"tcp": [f"0.0.0.0:{port}"]},
                        "admin": {"http": f"0.0.0.0:{admin}"}})
    d.wait_log(rf"warn .*listen\.tcp 0\.0\.0\.0:{port} ")
    d.wait_log(rf"warn .*admin\.http 0\.0\.0\.0:{admin} ")


def test_protected_or_loopback_listener_is_not_reported(tmp_path):
    port = free_port()
    for conf in (exposed_conf(port, port + 1, shared_key="k"),
                 {"listen": {"tcp": [f"127.0.0.1:{port}", f"[::1]:{port}",
                                     f"localhost:{port}"]}}):
        path = write(tmp_path, to_yaml({**GOOD, **conf}) + "\n", name="t.yaml")
        r = megaingestd("-t", "-c", path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "listen.tcp" not in r.stderr, r.stderr


# ---- item: --print-config ------------------------------------------------------

def test_print_config_is_yaml_with_secrets_hidden(tmp_path, rsa_certs):
    conf = {**GOOD, **tls_conf(rsa_certs)}
    conf["listen"] = {**GOOD["listen"], **conf["listen"], "shared_key": "Hunter2SharedKey"}
    conf["postgres"] = {"conninfo": "host=/tmp user=me password='Hunter2 Pw' dbname=mega"}
    path = write(tmp_path, to_yaml(conf) + "\n", name="t.yaml")
    r = megaingestd("--print-config", "-c", path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for secret in ("Hunter2", "SharedKey", "Pw'"):
        assert secret not in out + r.stderr, out
    with open(rsa_certs["server"][1]) as f:
        assert f.read().splitlines()[1] not in out      # never a key's contents
    tree = yaml.safe_load(out)
    assert tree["listen"]["shared_key"] == "(hidden)"
    assert tree["postgres"]["conninfo"] == "host=/tmp user=me password='(hidden)' dbname=mega"
    assert tree["listen"]["tls"]["key"] == rsa_certs["server"][1]      # paths are shown
    assert tree["listen"]["tls"]["ciphers"] == "ECDHE+AESGCM:ECDHE+CHACHA20"
    assert tree["writer"]["batch_max_events"] == 500
    assert tree["queue"]["max_events"] == 262144            # defaults too
    # What it prints is a configuration the daemon reads back to the same values.
    again = write(tmp_path, out, name="printed.yaml")
    r2 = megaingestd("--print-config", "-c", again)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.split("\n", 1)[1] == out.split("\n", 1)[1]


def test_print_config_of_a_bad_file_fails(tmp_path):
    path = write(tmp_path, "writer:\n  batch_max_events: ten\n")
    r = megaingestd("--print-config", "-c", path)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert "writer.batch_max_events" in r.stderr


def test_help_mentions_print_config():
    r = subprocess.run([MEGAINGESTD, "--help"], stdout=subprocess.PIPE, text=True)
    assert "--print-config" in r.stdout
