#!/bin/sh
# make bench: the full benchmark run (about 15 minutes on 2 cores); it writes
# bench/results/ (results.csv, results.md, plots) and rewrites the generated block of
# docs/BENCHMARKS.md. Options go to bench/bench.py (see --help), e.g.
#   bench/run.sh --quick                     seconds-long smoke of every path
#   bench/run.sh --paths connect,stream --variants loopback --figures up,down,echo
# RH_BUILD_DIR: the build tree holding the module and the client (default: this tree).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# the system python: the harness needs no package beyond Debian's python3
PY=${PYTHON3:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3
if [ $# -eq 0 ]; then
  set -- --update-docs
fi
exec "$PY" "$here/bench.py" "$@"
