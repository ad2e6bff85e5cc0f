#!/bin/sh
# run-pytest.sh: the integration suite, run by `make check` (automake TESTS).
#
# The tests start their own throwaway PostgreSQL cluster and a real
# megaingestd per test (tests/conftest.py). automake exports top_srcdir and
# top_builddir; run by hand, they default to this checkout and the current
# directory.
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

/usr/bin/python3 -m pytest -v -p no:cacheprovider --timeout=300 "$top_srcdir/tests"
rc=$?
case $rc in
0) ;;
5) echo "run-pytest.sh: pytest collected no tests: failing" >&2; rc=1 ;;
*) echo "run-pytest.sh: pytest exited with status $rc" >&2 ;;
esac
exit $rc
