"""The Debian package: built from a clean copy of this tree with
dpkg-buildpackage, installed on this machine with apt-get, checked (binaries,
configuration and its permissions, the unit under systemd-analyze, the man
pages), upgraded with an edited conffile, then removed and purged without
leaving anything behind.

It installs a package system-wide, so it runs only as root, and refuses to
touch a machine that already has megaingest installed or its directories in
place. One test function: the steps depend on each other, and a parallel
harness must not run two of them at once (a lock file also keeps two
checkouts on one machine apart)."""

import fcntl
import glob
import grp
import os
import pwd
import shutil
import subprocess
import time

import pytest

from helpers import SRCDIR

PKG = "megaingest"
CONF = "/etc/megaingest/megaingest.yaml"
SPOOL = "/var/lib/megaingest"
UNIT = "/lib/systemd/system/megaingestd.service"
LOCK = "/tmp/megaingest-test-deb.lock"
# Both builds must finish well inside run-pytest.sh's 300 s per test.
# noopt, nostrip, noddebs: the package is what is tested here, not the
# compiler: -O0 and no debug-symbol package save most of the build time.
BUILD_OPTIONS = "nocheck parallel=2 noopt nostrip noddebs"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a package: needs root"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in
                           ("dpkg-buildpackage", "apt-get", "dpkg", "dpkg-parsechangelog")),
                       reason="dpkg-buildpackage, dpkg or apt-get is not installed"),
    pytest.mark.skipif(not os.path.isfile(os.path.join(SRCDIR, "debian", "control")),
                       reason="no debian/ directory in this source tree"),
]


def run(args, cwd=None, env=None, check=True, user=None):
    """Run a command; on failure, its whole output is the assertion message."""
    if user is not None:
        args = ["runuser", "-u", user, "--"] + args
    r = subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check:
        assert r.returncode == 0, f"{' '.join(args)} exited {r.returncode}:\n{r.stdout}"
    return r


def apt(*args):
    """apt-get without questions: a prompt would read EOF and fail the test."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return run(["apt-get", "-y", "-o", "DPkg::Lock::Timeout=120"] + list(args), env=env)


def installed_version():
    r = run(["dpkg-query", "-W", "-f", "${Status} ${Version}", PKG], check=False)
    if r.returncode != 0 or not r.stdout.startswith("install ok installed"):
        return None
    return r.stdout.split()[-1]


def copy_tree(dest):
    """The tree as committed plus uncommitted edits, without build outputs:
    git's file list when this is a checkout, else everything but .dev/."""
    os.makedirs(dest)
    if os.path.isdir(os.path.join(SRCDIR, ".git")) or os.path.isfile(os.path.join(SRCDIR, ".git")):
        names = run(["git", "-C", SRCDIR, "ls-files", "-z", "-co", "--exclude-standard"]).stdout
        for name in filter(None, names.split("\0")):
            src = os.path.join(SRCDIR, name)
            if os.path.isfile(src):
                os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
                shutil.copy2(src, os.path.join(dest, name))
    else:
        shutil.copytree(SRCDIR, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".dev", "__pycache__", "*.o", "*.a"))


def build(tree, extra=()):
    env = dict(os.environ, DEB_BUILD_OPTIONS=BUILD_OPTIONS)
    run(["nice", "dpkg-buildpackage", "-us", "-uc", "-b"] + list(extra), cwd=tree, env=env)
    version = run(["dpkg-parsechangelog", "-S", "Version"], cwd=tree).stdout.strip()
    arch = run(["dpkg-architecture", "-qDEB_HOST_ARCH"]).stdout.strip()
    deb = os.path.join(os.path.dirname(tree), f"{PKG}_{version}_{arch}.deb")
    assert os.path.isfile(deb), os.listdir(os.path.dirname(tree))
    return version, deb


def bump_version(tree):
    """A second, newer version: a changelog entry on top, nothing else."""
    path = os.path.join(tree, "debian", "changelog")
    old = run(["dpkg-parsechangelog", "-S", "Version"], cwd=tree).stdout.strip()
    with open(path) as f:
        text = f.read()
    stamp = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    with open(path, "w") as f:
        f.write(f"{PKG} ({old}+upgrade1) unstable; urgency=medium\n\n"
                f"  * Upgrade test build.\n\n -- test <test@megaingest.invalid>  {stamp}\n\n"
                + text)


def leftovers(package_paths):
    """What of the package, its state and its systemd bookkeeping still exists."""
    left = [p for p in package_paths if os.path.lexists(p) and not os.path.isdir(p)]
    left += [d for d in ("/etc/megaingest", SPOOL, "/usr/share/megaingest",
                         "/usr/share/doc/megaingest", UNIT + ".d") if os.path.lexists(d)]
    left += glob.glob("/var/lib/systemd/deb-systemd-helper-*/**/megaingestd*", recursive=True)
    return left


def check_installed(version):
    assert installed_version() == version
    upstream = version.split("+")[0].split("-")[0]
    assert run(["megaingestd", "--version"]).stdout.strip() == f"megaingestd {upstream}"
    assert shutil.which("megaingestd") == "/usr/sbin/megaingestd"
    assert shutil.which("megactl") == "/usr/bin/megactl"
    # The conffile may carry a password: root and the daemon's group only.
    st = os.stat(CONF)
    assert (st.st_mode & 0o777, pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name) == (0o640, "root", "megaingest")
    st = os.stat(SPOOL)
    assert (st.st_mode & 0o777, pwd.getpwuid(st.st_uid).pw_name) == (0o700, "megaingest")
    # The user the unit runs as can validate it; any other user cannot read it.
    assert "configuration is valid" in run(["megaingestd", "-t", "-c", CONF],
                                           user="megaingest").stdout
    assert run(["megaingestd", "-t", "-c", CONF], user="nobody", check=False).returncode != 0
    for page in ("megaingestd", "megactl", "megaingest.yaml"):
        assert run(["man", "-w", page]).stdout.startswith("/usr/share/man/")
    for f in ("mega_tables.sql", "megaingest_role.sql", "megaingest_credits.sql",
              "megaingest.rules.yml"):
        assert os.path.isfile(os.path.join("/usr/share/megaingest", f)), f
    for f in ("README.md.gz", "SECURITY.md.gz", "copyright"):
        assert os.path.isfile(os.path.join("/usr/share/doc/megaingest", f)), f


def check_units():
    """The installed units (with the package's drop-in) as systemd reads them;
    not enabled on install, because the configuration has no database yet."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing although the package's units need systemd")
    args = ["systemd-analyze", "verify"]
    if shutil.which("man") is None:
        args.append("--man=no")
    r = run(args + [UNIT, "/lib/systemd/system/megaingestd.socket",
                    "/lib/systemd/system/megaingestd@.service"], check=False)
    assert r.returncode == 0 and r.stdout == "", r.stdout
    r = run(["systemctl", "cat", "megaingestd.service"], check=False)
    if r.returncode == 0:       # systemctl reads unit files without a running systemd
        assert "User=megaingest" in r.stdout and "DynamicUser=no" in r.stdout, r.stdout
    wants = glob.glob("/etc/systemd/system/*.wants/megaingestd*")
    assert wants == [], f"installed enabled: {wants}"


@pytest.fixture
def system_lock():
    with open(LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
        fcntl.flock(f, fcntl.LOCK_UN)


def test_package_builds_installs_upgrades_and_purges_clean(tmp_path, system_lock):
    if installed_version() is not None:
        pytest.skip("megaingest is installed on this machine; the test would purge it")
    present = [d for d in ("/etc/megaingest", SPOOL) if os.path.lexists(d)]
    if present:
        pytest.skip(f"{' and '.join(present)} exist outside the package; the test would "
                    "delete them on purge")
    tree = str(tmp_path / "megaingest")
    copy_tree(tree)
    v1, deb1 = build(tree)
    # The same tree, one changelog entry newer: no clean, no recompilation.
    bump_version(tree)
    v2, deb2 = build(tree, ["-nc"])
    assert v2 != v1
    try:
        apt("install", deb1)
        check_installed(v1)
        check_units()
        package_paths = run(["dpkg", "-L", PKG]).stdout.split("\n")
        # An operator's edit of the conffile survives the upgrade.
        with open(CONF, "a") as f:
            f.write("# edited by test_deb\n")
        apt("install", deb2)
        check_installed(v2)
        with open(CONF) as f:
            assert f.read().endswith("# edited by test_deb\n")
        package_paths += run(["dpkg", "-L", PKG]).stdout.split("\n")
        package_paths = sorted(set(p for p in package_paths if p))
        assert CONF in package_paths and "/usr/sbin/megaingestd" in package_paths
        # remove keeps configuration and spool; purge takes them too.
        apt("remove", PKG)
        assert os.path.isfile(CONF) and os.path.isdir(SPOOL)
        assert not os.path.exists("/usr/sbin/megaingestd")
        apt("purge", PKG)
        assert run(["dpkg-query", "-W", PKG], check=False).returncode != 0
        assert leftovers(package_paths) == []
    finally:
        if installed_version() is not None or \
                run(["dpkg-query", "-W", PKG], check=False).returncode == 0:
            apt("purge", PKG)
