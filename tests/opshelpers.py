"""opshelpers: what the operations tests share (admin HTTP, metrics, megactl).

admin_get        one HTTP GET to the daemon's admin endpoint
metrics          /metrics parsed by prometheus_client (Debian's
                 python3-prometheus-client): {(sample name, labels): value}
admin_daemon     a daemon with admin.http on a free port, started and ready
                 (/readyz 200: PostgreSQL connected)
committed        its events_committed_total
MEGACTL          the megactl binary of the build under test
"""

import http.client
import os

from prometheus_client.parser import text_string_to_metric_families

from helpers import BUILDDIR, free_tcp_port, wait_for

MEGACTL = os.environ.get("MEGACTL") or os.path.join(BUILDDIR, "megactl")


def admin_get(port, path, method="GET", timeout=10):
    """(status, content type, body text) of METHOD PATH on 127.0.0.1:PORT."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read().decode()
    finally:
        conn.close()


def parse_metrics(text):
    """Prometheus text -> ({(name, labels): value}, {family name: type})."""
    samples, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples, types


def metrics(port):
    """The daemon's /metrics as {(sample name, labels): value} (no types)."""
    status, ctype, body = admin_get(port, "/metrics")
    assert status == 200, body
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return parse_metrics(body)[0]


def m(samples, name, **labels):
    """One sample's value; NAME without the megaingest_ prefix."""
    return samples[("megaingest_" + name, tuple(sorted(labels.items())))]


def committed(d):
    """events_committed_total of admin daemon D."""
    return m(metrics(d.admin_port), "events_committed_total")


def wait_ready(port, timeout=20):
    """Wait for /readyz 200 (the writers connected) and return the body."""
    def ready():
        try:
            status, _, body = admin_get(port, "/readyz")
        except OSError:
            return None
        return body if status == 200 else None
    return wait_for(ready, timeout, what=f"/readyz 200 on port {port}")


def admin_daemon(daemon_factory, overrides=None, ready=True):
    """A daemon with admin.http on a free port (d.admin_port)."""
    port = free_tcp_port()
    cfg = {"admin": {"http": f"127.0.0.1:{port}"}}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    d = daemon_factory(cfg)
    d.admin_port = port
    if ready:
        wait_ready(port)
    return d
