#!/usr/bin/env bash
# dev.sh: the two commands a developer needs on a fresh Debian 12 machine.
#
#   ./dev.sh run    install what is missing, build, start a throwaway
#                   PostgreSQL under ./.dev/, apply the schema and run
#                   megaingestd in the foreground (Ctrl-C stops both)
#   ./dev.sh test   install, build, and run the whole suite twice at once: a
#                   normal build and an ASan/UBSan build, then each libFuzzer
#                   target for 10 s (.ci/run calls this)
#   ./dev.sh test FILE... [PYTEST ARGS]   those tests only, against the
#                   existing build in ./.dev/build (seconds)
#   ./dev.sh fuzz [SECONDS]   only the fuzz targets (default 60 s each)
#
# Builds are out of tree (./.dev/build, ./.dev/build-asan) so the source tree
# only ever holds what autoreconf generates. Everything this script creates
# lives under ./.dev/ (or /tmp when the postgres user cannot reach ./.dev/);
# `./dev.sh clean` removes it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEV="$ROOT/.dev"
PGBIN=/usr/lib/postgresql/15/bin
PYTHON=/usr/bin/python3
PG_PORT=5432

DEB_PACKAGES=(
	build-essential autoconf automake libtool pkg-config
	libevent-dev libpq-dev libmsgpack-dev libyaml-dev zlib1g-dev libssl-dev libsystemd-dev
	libyajl-dev
	postgresql-15 postgresql-client-15 pgbouncer
	python3 python3-pytest python3-pytest-timeout python3-pytest-xdist python3-msgpack
	python3-fluent-logger
	python3-psycopg2 python3-prometheus-client
	openssl clang libclang-rt-14-dev
	systemd man-db
	debhelper dpkg-dev lintian   # make deb, tests/test_deb.py
	chromium prometheus python3-yaml
	curl nodejs                  # real HTTP clients of tests/test_http.py
	e2fsprogs                    # chattr: an undeletable spool segment (test_durability.py)
)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'dev.sh: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

usage() {
	cat <<'EOF'
usage: ./dev.sh COMMAND

  run     install missing Debian packages, build into .dev/build, start a
          throwaway PostgreSQL 15 cluster under .dev/pg (private Unix socket,
          no TCP), apply supabase/mega_tables.sql, and run megaingestd in the
          foreground on etc/megaingest.yaml. Ctrl-C drains the daemon and
          stops the cluster.
  test    install, build, `make check` (C unit tests + pytest against a real
          daemon and a throwaway cluster, in parallel) in a normal build and,
          at the same time, in an ASan/UBSan build (.dev/build-asan), then a
          fuzz smoke of 10 s per target (MEGAINGEST_FUZZ_SECONDS changes the
          10; 0 skips it). MEGAINGEST_TEST_WORKERS sets the pytest workers of
          each build (default 3). Exits non-zero on any failure.
  test FILE... [PYTEST ARGS]
          only those tests (e.g. tests/test_ledger.py, or -k NAME), against
          the build in .dev/build brought up to date (MEGAINGEST_BUILD_DIR
          names another, e.g. .dev/build-asan); add -n 4 to run them in
          parallel
  fuzz [SECONDS]
          build the libFuzzer targets (tests/fuzz/) with clang and run each
          for SECONDS (default 60); the corpus grows in .dev/fuzz/corpus
  psql    open psql on the cluster of a running `./dev.sh run`
  clean   stop the dev cluster and remove .dev/
  help    this text
EOF
}

# ---- packages ------------------------------------------------------------

# Print the packages of DEB_PACKAGES that are not installed.
missing_packages() {
	local pkg status
	for pkg in "${DEB_PACKAGES[@]}"; do
		status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
		[ "$status" = "install ok installed" ] || printf '%s\n' "$pkg"
	done
}

install_packages() {
	command -v dpkg-query >/dev/null || die "dpkg-query not found: this script expects Debian 12"
	local missing sudo=()
	mapfile -t missing < <(missing_packages)
	[ "${#missing[@]}" -eq 0 ] && return 0
	is_root || sudo=(sudo)
	say "installing Debian packages: ${missing[*]}"
	"${sudo[@]}" apt-get update
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		"${missing[@]}"
}

# ---- build ---------------------------------------------------------------

# Regenerate ./configure when it is missing or older than its inputs.
bootstrap() {
	if [ ! -x "$ROOT/configure" ] || [ "$ROOT/configure.ac" -nt "$ROOT/configure" ] \
		|| [ "$ROOT/Makefile.am" -nt "$ROOT/configure" ]; then
		say "autoreconf -fi"
		(cd "$ROOT" && autoreconf -fi)
	fi
}

# build DIR [configure args...]: out-of-tree configure (once) and make.
build() {
	local dir=$1
	shift
	mkdir -p "$dir"
	if [ ! -f "$dir/Makefile" ] || [ "$ROOT/configure" -nt "$dir/config.status" ]; then
		say "configuring in ${dir#"$ROOT"/} $*"
		(cd "$dir" && "$ROOT/configure" "$@")
	fi
	say "building in ${dir#"$ROOT"/}"
	make -C "$dir" -j2
}

# ---- throwaway PostgreSQL ------------------------------------------------

PGDIR=""   # cluster root: data/, socket dir, log
PG_AS=()   # prefix that runs a command as the cluster's owner

# Choose where the cluster lives. As root the server must run as postgres,
# which needs to traverse every directory down to it; a checkout under a
# private home directory does not allow that, so fall back to /tmp.
pg_choose_dir() {
	PGDIR="$DEV/pg"
	PG_AS=()
	is_root || return 0
	# env -C /: the server and pg_ctl cannot enter a private working directory
	PG_AS=(runuser -u postgres -- env -C /)
	mkdir -p "$PGDIR"
	chown postgres: "$PGDIR"
	if ! "${PG_AS[@]}" test -w "$PGDIR" -a -x "$PGDIR"; then
		PGDIR=/tmp/megaingest-dev-pg
		say "the postgres user cannot reach $DEV; using $PGDIR for the cluster instead"
		mkdir -p "$PGDIR"
		chown postgres: "$PGDIR"
		chmod 0700 "$PGDIR"
	fi
}

pg_start() {
	pg_choose_dir
	mkdir -p "$PGDIR"
	if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
		say "initdb $PGDIR/data"
		"${PG_AS[@]}" "$PGBIN/initdb" -D "$PGDIR/data" --auth=trust -U postgres \
			-E UTF8 --locale=C.UTF-8 >"$PGDIR/initdb.log" 2>&1 \
			|| { cat "$PGDIR/initdb.log" >&2; die "initdb failed"; }
	fi
	# A cluster left running by an earlier run that was killed: stop it first.
	if "${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
		"${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null
	fi
	say "starting PostgreSQL (socket in $PGDIR, no TCP)"
	"${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w -t 60 \
		-o "-k $PGDIR -c listen_addresses='' -p $PG_PORT" start >/dev/null \
		|| { tail -n 30 "$PGDIR/postgres.log" >&2; die "PostgreSQL did not start"; }
	export PGHOST="$PGDIR" PGPORT="$PG_PORT" PGUSER=postgres PGDATABASE=postgres
	say "applying supabase/mega_tables.sql"
	psql -X -q -v ON_ERROR_STOP=1 -f "$ROOT/supabase/mega_tables.sql"
}

pg_stop() {
	[ -n "$PGDIR" ] && [ -f "$PGDIR/data/postmaster.pid" ] || return 0
	say "stopping PostgreSQL"
	"${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null || true
}

# ---- run -----------------------------------------------------------------

# Print the config file to run with. As root, the shipped etc/megaingest.yaml
# as it is (its directories created); otherwise a copy whose socket and spool
# paths point into .dev/, since /run and /var/lib are root's.
daemon_config() {
	local src="$ROOT/etc/megaingest.yaml"
	[ -f "$src" ] || die "$src not found"
	if is_root; then
		mkdir -p /run/megaingest
		install -d -m 0700 /var/lib/megaingest
		printf '%s\n' "$src"
		return 0
	fi
	mkdir -p "$DEV/run"
	install -d -m 0700 "$DEV/spool"
	sed -e "s#/run/megaingest/megaingest.sock#$DEV/run/megaingest.sock#g" \
		-e "s#/var/lib/megaingest#$DEV/spool#g" "$src" >"$DEV/megaingest.yaml"
	printf '%s\n' "$DEV/megaingest.yaml"
}

# The first TCP port of listen.tcp in CONFIG (24224 when none is found).
config_tcp_port() {
	local port
	port=$(sed -n 's/^[[:space:]]*tcp:.*:\([0-9][0-9]*\)["'"'"'].*/\1/p' "$1" | head -n 1)
	printf '%s\n' "${port:-24224}"
}

config_unix_path() {
	sed -n 's/^[[:space:]]*unix:[[:space:]]*"\{0,1\}\([^"#[:space:]]*\).*/\1/p' "$1" | head -n 1
}

print_howto() {
	local conf=$1 port sock
	port=$(config_tcp_port "$conf")
	sock=$(config_unix_path "$conf")
	cat <<EOF

megaingestd is starting on $conf
  TCP 127.0.0.1:$port (Fluentd Forward protocol), Unix socket ${sock:-(none)}

Send an event from another terminal with python3-fluent-logger:

  $PYTHON -c 'from fluent import sender; s = sender.FluentSender("mega", host="127.0.0.1", port=$port); s.emit("generation", {"mg_id": "demo-1", "mg_pass_id": "pass-demo", "prompt": "hello", "latency_ms": 42}); s.close()'

or as a raw msgpack map over the Unix socket:

  $PYTHON -c 'import socket, msgpack; s = socket.socket(socket.AF_UNIX); s.connect("$sock"); s.sendall(msgpack.packb({"mg_id": "demo-2", "mg_record_type": "session", "mg_pass_id": "pass-demo", "title": "first session"})); s.close()'

and look at the rows:

  PGHOST=$PGHOST PGPORT=$PGPORT psql -U postgres -c 'SELECT mg_id, mg_record_type, mg_prompt, mg_title, mg_meta FROM mega_generations'

Ctrl-C stops the daemon (it drains its queue first) and the cluster.

EOF
}

cmd_run() {
	install_packages
	bootstrap
	build "$DEV/build"
	local conf rc=0
	conf=$(daemon_config)
	trap pg_stop EXIT
	pg_start
	print_howto "$conf"
	# Not exec: the cluster is stopped by the EXIT trap once the daemon exits.
	# Ctrl-C reaches the daemon directly (same process group); it drains and
	# exits 0.
	"$DEV/build/megaingestd" -c "$conf" || rc=$?
	say "megaingestd exited with status $rc"
	return "$rc"
}

# ---- test ----------------------------------------------------------------

# Show what failed in BUILD_DIR: the suite log holds every failing test's log.
show_failures() {
	local dir=$1
	if [ -f "$dir/test-suite.log" ]; then
		say "$dir/test-suite.log:"
		cat "$dir/test-suite.log" >&2
	fi
}

# pytest's closing summary lines in DIR's log: one for the parallel pass,
# one for the serial pass.
pytest_summaries() {
	grep -E '^=+ .* in [0-9.]+s' "$1/tests/run-pytest.sh.log" 2>/dev/null || true
}

# make check in DIR; print pytest's closing summary lines.
run_checks() {
	local dir=$1 label=$2 rc=0 start=$SECONDS
	say "make check ($label)"
	make -C "$dir" -j2 check || rc=$?
	say "make check ($label) took $((SECONDS - start)) s"
	if [ -f "$dir/tests/run-pytest.sh.log" ]; then
		say "pytest ($label): $(pytest_summaries "$dir" | tr -s '=' | paste -sd ';' -)"
	fi
	if [ "$rc" -ne 0 ]; then
		show_failures "$dir"
		die "make check failed in the $label build"
	fi
}

cmd_test() {
	[ "$#" -gt 0 ] && { test_some "$@"; return; }
	local start=$SECONDS t normal sanitizers fuzz rc=0
	install_packages
	bootstrap
	t=$SECONDS
	build "$DEV/build"
	build "$DEV/build-asan" --enable-sanitizers
	say "builds took $((SECONDS - t)) s"
	# The two builds' suites run side by side, each with its workers: their
	# tests mostly wait (on the daemon, PostgreSQL, timeouts), so together
	# they take little longer than one. Ports, sockets and clusters are per
	# test process (tests/helpers.py), so they cannot collide.
	export MEGAINGEST_TEST_WORKERS=${MEGAINGEST_TEST_WORKERS:-4}
	# The fuzz smoke (its own clang build, then 10 s a target) runs beside
	# them too: its CPU fills the time the suites spend waiting.
	cmd_fuzz "${MEGAINGEST_FUZZ_SECONDS:-10}" > "$DEV/fuzz-smoke.log" 2>&1 &
	fuzz=$!
	run_checks "$DEV/build" "normal" &
	normal=$!
	(
		export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
		export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
		# The package test builds its own .deb from the source tree, not from
		# the build under test: the normal build's suite runs it (twice at
		# once, one would wait out the other's system-wide lock).
		export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-} --ignore=$ROOT/tests/test_deb.py"
		run_checks "$DEV/build-asan" "sanitizers"
	) &
	sanitizers=$!
	wait "$normal" || rc=1
	wait "$sanitizers" || rc=1
	[ "$rc" -eq 0 ] || die "make check failed (see above)"
	wait "$fuzz" || { cat "$DEV/fuzz-smoke.log" >&2; die "the fuzz smoke failed (see above)"; }
	cat "$DEV/fuzz-smoke.log" >&2
	say "all tests passed in $((SECONDS - start)) s"
	# The plain closing line CI reads: pytest cases plus C unit programs, both builds.
	printf 'tests: %d passed, 0 failed\n' \
		$(($(count_passed "$DEV/build") + $(count_passed "$DEV/build-asan")))
}

# Passed tests in DIR: pytest's cases (both passes) plus the C unit programs
# automake ran.
count_passed() {
	local dir=$1 py units
	py=$(pytest_summaries "$dir" | grep -oE '[0-9]+ passed' | cut -d' ' -f1 | paste -sd+ -)
	units=$(find "$dir/tests/unit" -name '*.trs' -exec grep -l ':test-result: PASS' {} + | wc -l)
	echo $((${py:-0} + units))
}

# ./dev.sh test FILE... [PYTEST ARGS]: pytest on those against an existing
# build, made up to date first (a no-op when nothing changed).
test_some() {
	local dir=${MEGAINGEST_BUILD_DIR:-$DEV/build}
	case $dir in /*) ;; *) dir="$ROOT/$dir" ;; esac
	[ -f "$dir/Makefile" ] || die "no build in $dir: run ./dev.sh test once first"
	make -C "$dir" -s -j2 all >/dev/null || die "the build in $dir failed"
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	top_srcdir="$ROOT" top_builddir="$dir" MEGAINGESTD="$dir/megaingestd" \
		"$ROOT/tests/run-pytest.sh" "$@"
}

# ---- fuzz ----------------------------------------------------------------

# Run every libFuzzer target for SECONDS (0: skip). Crashes, leaks, sanitizer
# reports and hangs fail; the offending input is left in .dev/fuzz/artifacts.
cmd_fuzz() {
	local seconds=${1:-60}
	[ "$seconds" = 0 ] && { say "fuzzing skipped (0 s)"; return 0; }
	install_packages
	FUZZ_BUILD_DIR="$DEV/fuzz" "$ROOT/tests/fuzz/run" "$seconds" \
		|| die "a fuzz target found a problem (see above)"
}

# ---- misc ----------------------------------------------------------------

cmd_psql() {
	local dir
	for dir in "$DEV/pg" /tmp/megaingest-dev-pg; do
		if [ -S "$dir/.s.PGSQL.$PG_PORT" ]; then
			exec psql -X -h "$dir" -p "$PG_PORT" -U postgres -d postgres "$@"
		fi
	done
	die "no dev cluster is running (start one with ./dev.sh run)"
}

cmd_clean() {
	pg_choose_dir
	pg_stop
	rm -rf "$DEV"
	[ "$PGDIR" = "$DEV/pg" ] || rm -rf "$PGDIR"
	say "removed $DEV"
}

main() {
	local cmd=${1:-help}
	[ "$#" -gt 0 ] && shift
	cd "$ROOT"
	case "$cmd" in
	run) cmd_run "$@" ;;
	test) cmd_test "$@" ;;
	fuzz) cmd_fuzz "$@" ;;
	psql) cmd_psql "$@" ;;
	clean) cmd_clean ;;
	help | -h | --help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
