#!/bin/bash
# The cost of an idle batch long-poll (docs/BENCHMARKS.md, "The cost of a batch request"):
#   bench/idle-poll.sh BUILD OUT count    CPU ticks and context switches of the Apache
#                                          children and relay cores per long-poll, 25 s
#   bench/idle-poll.sh BUILD OUT strace   strace -c -f of the children and of the cores
#                                          for 25 s (OUT/strace-*.txt), then perf record -g
#                                          for 20 s (OUT/perf.data)
# Runs the idle-async figure with 2000 batch tunnels (BUILD: RH_BUILD_DIR) and measures
# from 35 s (count) or 40 s (strace) after the ramp's start; the long-polls in each
# window are counted in the access log. Results go to OUT/result.txt. As root.
# RH_IDLE_FROM=S and RH_IDLE_SETTLE=S move the window's start and the hold
# (a steady state of watching tunnels: RH_IDLE_FROM=150 RH_IDLE_SETTLE=200).
set -u
B=$1; O=$2; MODE=${3:-count}
SETTLE=60; [ "$MODE" = strace ] && SETTLE=120
SETTLE=${RH_IDLE_SETTLE:-$SETTLE}   # the bench holds the tunnels this long
rm -rf "$O"; mkdir -p "$O/tmp"
here=$(cd "$(dirname "$0")" && pwd)
RH_BUILD_DIR=$B "$here/run.sh" --paths batch --variants loopback --figures idle-async \
  --idle-async 2000 --idle-settle $SETTLE --idle-async-hold 1 --out "$O/bench" \
  --tmpdir "$O/tmp" > "$O/bench.log" 2>&1 &
BP=$!
until grep -q 'idle ramp to' "$O/bench.log" 2>/dev/null; do
  sleep 1; kill -0 $BP 2>/dev/null || { echo "bench ended early: $O/bench.log"; exit 1; }
done
FROM=35; [ "$MODE" = strace ] && FROM=40
sleep ${RH_IDLE_FROM:-$FROM}         # the window starts this long after the ramp's
par=""
for p in $(pgrep -x apache2); do
  case "$(tr '\0' ' ' < /proc/$p/cmdline)" in
    *"$O/tmp"*) [ "$(ps -o comm= -p "$(ps -o ppid= -p $p | tr -d ' ')")" != apache2 ] && par=$p;;
  esac
done
kids=""; cores=""
for p in $(pgrep -P "$par"); do   # the cores are the parent's single-threaded children
  if [ "$(ls /proc/$p/task | wc -l)" = 1 ]; then cores="$cores $p"; else kids="$kids $p"; fi
done
alog=$(find "$O/tmp" -name access_common.log | head -1)
ticks() { for p in $kids $cores; do awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null; done | awk '{s += $1} END {print s}'; }
ctx() { cat $(for p in $kids $cores; do echo /proc/$p/task/*/status; done) 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s}'; }
l0=$(wc -l < "$alog")
if [ "$MODE" = strace ]; then
  timeout -s INT 25 strace -c -f -o "$O/strace-children.txt" $(for p in $kids; do echo -p $p; done) & S1=$!
  timeout -s INT 25 strace -c -f -o "$O/strace-cores.txt" $(for p in $cores; do echo -p $p; done) & S2=$!
  wait $S1 $S2
  echo "long-polls in the strace window: $(( $(wc -l < "$alog") - l0 ))" >> "$O/result.txt"
  l0=$(wc -l < "$alog")
  perf record -g -o "$O/perf.data" -p "$(echo $kids $cores | tr ' ' ',')" -- sleep 20 > "$O/perf.log" 2>&1
  echo "long-polls in the perf window: $(( $(wc -l < "$alog") - l0 ))" >> "$O/result.txt"
else
  t0=$(ticks); c0=$(ctx)
  sleep 25
  t1=$(ticks); c1=$(ctx); n=$(( $(wc -l < "$alog") - l0 ))
  hz=$(getconf CLK_TCK)
  echo "long-polls $n, server CPU $(( (t1 - t0) * 1000 / hz )) ms: $(( (t1 - t0) * 1000000 / hz / n )) us and $(( (c1 - c0) * 10 / n ))/10 context switches per long-poll" >> "$O/result.txt"
fi
cat "$O/result.txt"
wait $BP
