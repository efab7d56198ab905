#!/bin/sh
# make complexity: every product function by cyclomatic complexity (pmccabe,
# the modified count: a switch counts once), and every product C file by
# length. Fails on a function over COMPLEXITY_MAX or a file over LINES_MAX.
top=${1:-$(cd "$(dirname "$0")/.." && pwd)}
max=${COMPLEXITY_MAX:-30}
lines=${LINES_MAX:-650}
cd "$top" || exit 1
if ! command -v pmccabe >/dev/null; then
    echo "complexity: pmccabe not found (Debian package pmccabe)" >&2
    exit 1
fi
files=$(ls proto/*.c relaycore/*.c mod_relay_https/*.c client/*.c)
fail=0
echo "complexity: the 10 most complex functions (limit $max)"
pmccabe $files | sort -k1,1nr | head -10 | awk '{ printf "  %3d  %s\n", $1, $6 " " $7 }'
over=$(pmccabe $files | awk -v m="$max" '$1 > m { print "  " $1 "  " $6 " " $7 }')
if [ -n "$over" ]; then
    echo "complexity: functions over $max:"
    echo "$over"
    fail=1
fi
echo "complexity: the 10 longest files (limit $lines lines)"
wc -l $files | grep -v ' total$' | sort -nr | head -10 | awk '{ printf "  %5d  %s\n", $1, $2 }'
long=$(wc -l $files | grep -v ' total$' | awk -v m="$lines" '$1 > m { print "  " $1 "  " $2 }')
if [ -n "$long" ]; then
    echo "complexity: files over $lines lines:"
    echo "$long"
    fail=1
fi
[ $fail = 0 ] && echo "complexity: every function <= $max, every file <= $lines lines"
exit $fail
