"""megaingestd's command line: -t, --version, --help, bad configs."""

import os
import re
import subprocess

from helpers import MEGAINGESTD, SRCDIR, to_yaml

GOOD = {
    "listen": {"tcp": ["127.0.0.1:24224"], "unix": "/tmp/megaingest-never-bound.sock"},
    "writer": {"batch_max_events": 500, "flush_interval_ms": 50},
    "spool": {"dir": "/tmp/megaingest-never-used"},
    "admin": {"http": ""},
}


def megaingestd(*args, timeout=60):
    return subprocess.run(["timeout", str(timeout), MEGAINGESTD] + list(args),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def write(tmp_path, text, name="megaingest.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_version():
    r = megaingestd("--version")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(SRCDIR, "configure.ac"), encoding="utf-8") as f:
        version = re.search(r"AC_INIT\(\[megaingest\], \[([^]]+)\]", f.read()).group(1)
    assert "megaingest" in r.stdout and version in r.stdout, r.stdout


def test_help():
    r = megaingestd("--help")
    assert r.returncode == 0, r.stderr
    for opt in ("-c", "-t", "--version", "--help"):
        assert opt in r.stdout, f"--help does not mention {opt}:\n{r.stdout}"


def test_unknown_option_fails():
    r = megaingestd("--no-such-option")
    assert r.returncode != 0
    assert r.stderr.strip(), "an unknown option must be explained on stderr"


def test_check_good_config(tmp_path):
    path = write(tmp_path, to_yaml(GOOD) + "\n")
    r = megaingestd("-t", "-c", path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_the_shipped_config():
    r = megaingestd("-t", "-c", os.path.join(SRCDIR, "etc", "megaingest.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_empty_config_means_defaults(tmp_path):
    path = write(tmp_path, "# nothing: every key takes its default\n")
    r = megaingestd("--check-config", "-c", path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_bad_value_names_file_and_line(tmp_path):
    text = ("listen:\n"
            "  tcp: [\"127.0.0.1:24224\"]\n"
            "writer:\n"
            "  batch_max_events: ten\n")
    path = write(tmp_path, text)
    r = megaingestd("-t", "-c", path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(re.escape(path) + r":4:\d+: writer\.batch_max_events", out), out


def test_check_reports_every_error(tmp_path):
    text = ("listen:\n"
            "  max_connections: -5\n"
            "  bogus_key: 1\n"
            "log:\n"
            "  level: loud\n")
    path = write(tmp_path, text)
    r = megaingestd("-t", "-c", path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    for line, key in ((2, "listen.max_connections"), (3, "listen.bogus_key"), (5, "log.level")):
        assert re.search(re.escape(path) + rf":{line}:\d+: {re.escape(key)}", out), \
            f"no error for {key} at line {line}:\n{out}"


def test_check_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "listen:\n  tcp: [\"127.0.0.1:24224\"\nwriter: {\n")
    r = megaingestd("-t", "-c", path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(re.escape(path) + r":\d+:\d+:", out), out


def test_check_missing_file(tmp_path):
    path = str(tmp_path / "absent.yaml")
    r = megaingestd("-t", "-c", path)
    assert r.returncode == 1
    assert path in r.stdout + r.stderr


def test_start_with_bad_config_fails(tmp_path):
    path = write(tmp_path, "writer:\n  flush_interval_ms: soon\n")
    r = megaingestd("-c", path)
    assert r.returncode != 0
    assert re.search(re.escape(path) + r":2:\d+: writer\.flush_interval_ms", r.stderr), r.stderr
