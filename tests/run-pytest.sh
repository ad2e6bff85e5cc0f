#!/bin/sh
# run-pytest.sh: the integration suite, run by `make check` (automake TESTS).
#
#   tests/run-pytest.sh              the whole suite: every test not marked
#                                    `serial` in parallel (pytest-xdist,
#                                    MEGAINGEST_TEST_WORKERS workers, default
#                                    4), then the `serial` ones alone
#   tests/run-pytest.sh ARGS...      pytest ARGS (a file, a -k filter, -n 4)
#                                    against this build, nothing else
#
# The tests start their own throwaway PostgreSQL cluster (one per worker) and
# a real megaingestd per test (tests/conftest.py). automake exports
# top_srcdir and top_builddir; run by hand, they default to this checkout and
# the current directory.
#
# pytest's exit 5 ("no tests collected") is a failure here: a suite that
# silently finds nothing must not pass.
set -u

top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-$(pwd)}
MEGAINGESTD=${MEGAINGESTD:-$top_builddir/megaingestd}
export MEGAINGESTD top_srcdir top_builddir
# The source tree is read-only under `make distcheck`.
export PYTHONDONTWRITEBYTECODE=1
# Most of a test's time is spent waiting on the daemon and PostgreSQL, so
# twice the cores (2 on the reference machine) keeps them busy.
WORKERS=${MEGAINGEST_TEST_WORKERS:-4}

pytest() {
	/usr/bin/python3 -m pytest -v -p no:cacheprovider --timeout=300 "$@"
	rc=$?
	case $rc in
	0) ;;
	5) echo "run-pytest.sh: pytest collected no tests: failing" >&2; rc=1 ;;
	*) echo "run-pytest.sh: pytest exited with status $rc" >&2 ;;
	esac
	return $rc
}

if [ "$#" -gt 0 ]; then
	pytest "$@"
	exit $?
fi

pytest -n "$WORKERS" -m "not serial" "$top_srcdir/tests"
rc=$?
# The serial pass may be empty (exit 5 here is no failure).
/usr/bin/python3 -m pytest -v -p no:cacheprovider --timeout=300 -m serial "$top_srcdir/tests"
case $? in
0 | 5) ;;
*) echo "run-pytest.sh: the serial pass failed" >&2; rc=1 ;;
esac
exit $rc
