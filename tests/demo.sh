#!/bin/bash
# Live demo of mod_relay_https (what `make demo` and `./quickstart demo` run).
#
# Starts a throwaway Apache on 127.0.0.1 with TLS (self-signed certificate), a
# static page, and the module under /relay with one target "echo" (a socat echo
# server); then carries data through the tunnel with the relay-https client while
# the site keeps serving its page.  Everything is removed at exit.
#
# Needs the build done in the repository (./configure && make), or RH_BUILD_DIR.
# DEMO_KEEP=1 keeps everything running until Ctrl-C, to try it by hand.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${RH_BUILD_DIR:-$ROOT}"
MODULE="$BUILD/mod_relay_https/.libs/mod_relay_https.so"
CLIENT="$BUILD/client/relay-https"
APACHE="${RH_APACHE_BIN:-/usr/sbin/apache2}"
MODS="${RH_APACHE_MODULES:-/usr/lib/apache2/modules}"

say()  { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die()  { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ -f "$MODULE" ] || die "module not built: $MODULE (run ./configure && make first)"
[ -x "$CLIENT" ] || die "client not built: $CLIENT (run ./configure && make first)"
[ -x "$APACHE" ] || die "$APACHE not found (Debian package apache2)"
for t in openssl socat curl; do
  command -v "$t" >/dev/null || die "$t not found (Debian package $t)"
done

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

DIR="$(mktemp -d /tmp/relay-https-demo.XXXXXX)"
APACHE_PID="" ECHO_PID="" FWD_PID=""
cleanup() {
  set +e
  [ -n "$FWD_PID" ] && kill "$FWD_PID" 2>/dev/null
  [ -n "$ECHO_PID" ] && kill "$ECHO_PID" 2>/dev/null
  if [ -n "$APACHE_PID" ]; then
    kill -TERM "$APACHE_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$APACHE_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$APACHE_PID" 2>/dev/null
  fi
  # any process still running from our config (children, helper processes)
  for p in /proc/[0-9]*; do
    grep -qaF -- "$DIR/httpd.conf" "$p/cmdline" 2>/dev/null && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  wait 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

HTTPS_PORT="$(free_port)"
ECHO_PORT="$(free_port)"
LOCAL_PORT="$(free_port)"
URL="https://127.0.0.1:$HTTPS_PORT/relay"

say "1. a self-signed certificate for 127.0.0.1"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
  -keyout "$DIR/server.key" -out "$DIR/server.crt" 2>/dev/null
echo "$DIR/server.crt"

say "2. an echo server (the relay target) on 127.0.0.1:$ECHO_PORT"
socat TCP-LISTEN:"$ECHO_PORT",bind=127.0.0.1,reuseaddr,fork EXEC:cat &
ECHO_PID=$!
echo "socat TCP-LISTEN:$ECHO_PORT,bind=127.0.0.1,reuseaddr,fork EXEC:cat"

say "3. Apache on https://127.0.0.1:$HTTPS_PORT/ with a static page and the relay under /relay"
mkdir -p "$DIR/htdocs" "$DIR/run" "$DIR/lock" "$DIR/logs"
echo '<html><body><h1>Hello from the website next to the relay</h1></body></html>' >"$DIR/htdocs/index.html"
USERCONF=""
if [ "$(id -u)" = 0 ]; then
  USERCONF=$'User www-data\nGroup www-data'
  chmod 755 "$DIR" "$DIR/htdocs" "$DIR/run" "$DIR/logs"
  chmod 644 "$DIR/htdocs/index.html" "$DIR/server.crt"
  chown www-data:www-data "$DIR/lock"
fi
cat >"$DIR/httpd.conf" <<EOF
ServerRoot "$DIR"
ServerName 127.0.0.1
Listen 127.0.0.1:$HTTPS_PORT https
DefaultRuntimeDir "$DIR/run"
PidFile "$DIR/run/apache2.pid"
Mutex file:$DIR/lock default
ErrorLog "$DIR/logs/error.log"
LoadModule mpm_event_module $MODS/mod_mpm_event.so
LoadModule authz_core_module $MODS/mod_authz_core.so
LoadModule mime_module $MODS/mod_mime.so
LoadModule dir_module $MODS/mod_dir.so
LoadModule socache_shmcb_module $MODS/mod_socache_shmcb.so
LoadModule ssl_module $MODS/mod_ssl.so
LoadModule http2_module $MODS/mod_http2.so
LoadModule relay_https_module $MODULE
$USERCONF
LogLevel warn relay_https:debug
TypesConfig /etc/mime.types
DocumentRoot "$DIR/htdocs"
<Directory "$DIR/htdocs">
    Require all granted
</Directory>
DirectoryIndex index.html
LogFormat "%P %{relay-session}n \"%r\" %>s" relay
CustomLog "$DIR/logs/access.log" relay
SSLEngine on
SSLCertificateFile "$DIR/server.crt"
SSLCertificateKeyFile "$DIR/server.key"
SSLSessionCache shmcb:$DIR/run/ssl_scache(512000)
Protocols h2 http/1.1

RelayMaxSessions 256
<Location /relay>
    SetHandler relay-https
    RelayTarget echo 127.0.0.1:$ECHO_PORT
</Location>
EOF
sed -n '/<Location \/relay>/,/<\/Location>/p' "$DIR/httpd.conf"
"$APACHE" -f "$DIR/httpd.conf" -DFOREGROUND >"$DIR/logs/stderr.log" 2>&1 &
APACHE_PID=$!
ok=""
for _ in $(seq 100); do
  if curl -fsS --max-time 2 --cacert "$DIR/server.crt" -o /dev/null "https://127.0.0.1:$HTTPS_PORT/" 2>/dev/null; then
    ok=1; break
  fi
  kill -0 "$APACHE_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$ok" ]; then
  cat "$DIR/logs/stderr.log" "$DIR/logs/error.log" >&2 2>/dev/null || true
  die "Apache did not start"
fi

say "4. the website still serves its page"
echo "\$ curl --cacert server.crt https://127.0.0.1:$HTTPS_PORT/"
curl -sS --cacert "$DIR/server.crt" "https://127.0.0.1:$HTTPS_PORT/"

say "5. a tunnel: relay-https forward -L 127.0.0.1:$LOCAL_PORT $URL echo"
"$CLIENT" forward -L "127.0.0.1:$LOCAL_PORT" --cacert "$DIR/server.crt" "$URL" echo \
  2>"$DIR/logs/forward.log" &
FWD_PID=$!
for _ in $(seq 100); do
  grep -q "listening on" "$DIR/logs/forward.log" 2>/dev/null && break
  kill -0 "$FWD_PID" 2>/dev/null || break
  sleep 0.1
done
grep -q "listening on" "$DIR/logs/forward.log" || { cat "$DIR/logs/forward.log" >&2; die "relay-https forward did not start"; }
cat "$DIR/logs/forward.log"

LINE="hello through the relay, $(date +%T)"
echo "\$ echo '$LINE' | socat - TCP:127.0.0.1:$LOCAL_PORT"
GOT="$(echo "$LINE" | socat -t 10 -T 20 - TCP:127.0.0.1:"$LOCAL_PORT")"
echo "$GOT"
[ "$GOT" = "$LINE" ] || die "the echo came back different: '$GOT'"

say "6. the same through stdin/stdout (what ssh's ProxyCommand uses)"
echo "\$ echo 'hello via stdio' | relay-https stdio --cacert server.crt $URL echo"
GOT2="$(echo 'hello via stdio' | timeout 20 "$CLIENT" stdio --cacert "$DIR/server.crt" "$URL" echo)"
echo "$GOT2"
[ "$GOT2" = "hello via stdio" ] || die "stdio echo came back different: '$GOT2'"

say "7. 1 MB of random bytes each way"
head -c 1048576 /dev/urandom >"$DIR/random.bin"
SUM_IN="$(sha256sum <"$DIR/random.bin" | cut -d' ' -f1)"
SUM_OUT="$(timeout 60 socat -t 10 -T 30 - TCP:127.0.0.1:"$LOCAL_PORT" <"$DIR/random.bin" | sha256sum | cut -d' ' -f1)"
echo "sent     $SUM_IN"
echo "received $SUM_OUT"
[ "$SUM_IN" = "$SUM_OUT" ] || die "checksums differ"

say "8. Apache's access log (%P = serving process, then the session id; no secret in it)"
sleep 0.5
tail -n 8 "$DIR/logs/access.log"

cat <<EOF

The demo worked: the site served its page, and TCP data went through
https://127.0.0.1:$HTTPS_PORT/relay to the echo target and back.
On a real server, see conf.d-examples/ (a2enmod relay_https; <Location /relay> ...).
EOF

if [ "${DEMO_KEEP:-}" = 1 ]; then
  cat <<EOF

Still running (Ctrl-C stops everything and removes $DIR):
  socat - TCP:127.0.0.1:$LOCAL_PORT          # type lines, see them echoed through the relay
  $CLIENT stdio --cacert $DIR/server.crt $URL echo
  curl --cacert $DIR/server.crt https://127.0.0.1:$HTTPS_PORT/
  tail -f $DIR/logs/access.log $DIR/logs/error.log
EOF
  wait "$FWD_PID" || true
else
  echo "To try it by hand: DEMO_KEEP=1 $0   (keeps Apache and the tunnel running until Ctrl-C)"
fi
