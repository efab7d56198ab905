#!/bin/sh
# The include rules of the layout (docs/ARCHITECTURE.md, "The tree"): the folder
# is the house, and what a file may include follows from it.
#   proto/            libc only: no httpd, APR, curl or OpenSSL
#   relaycore/             proto/, libc, POSIX, libcrypto: no httpd, APR or curl
#   mod_relay_https/  proto/, relaycore/, httpd, APR: no curl
#   client/           proto/ and libcurl: nothing of relaycore/ or mod_relay_https/
# Run by make check; prints every broken rule and fails on any.
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
fail=0
say() { echo "check-layout: $*"; fail=1; }

# the quoted includes of the files in one folder, as "file:line:name"
quoted() { grep -Hn '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$1"/*.[ch] |
           sed 's/#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/'; }
angled() { grep -Hn '^[[:space:]]*#[[:space:]]*include[[:space:]]*<' "$1"/*.[ch] |
           sed 's/#[[:space:]]*include[[:space:]]*<\([^>]*\)>.*/\1/'; }
# httpd and APR headers, recognised by name
HTTPD='^(httpd|http_[a-z_]*|ap_[a-z_]*|apr_[a-z_]*|apu[a-z_]*|util_[a-z_]*|mpm_common|unixd|mod_[a-z_0-9]*|scoreboard)\.h$'

for f in $(angled proto); do
    case "${f##*:}" in
    curl/*|openssl/*) say "$f: proto/ includes libc only" ;;
    esac
    echo "${f##*:}" | grep -Eq "$HTTPD" && say "$f: proto/ includes libc only"
done
for f in $(quoted proto); do
    [ -f "proto/${f##*:}" ] || say "$f: proto/ includes only proto/"
done
for f in $(angled relaycore); do
    case "${f##*:}" in curl/*) say "$f: relaycore/ must not include curl" ;; esac
    echo "${f##*:}" | grep -Eq "$HTTPD" && say "$f: relaycore/ must not include httpd or APR"
done
for f in $(quoted relaycore); do
    [ -f "relaycore/${f##*:}" ] || [ -f "proto/${f##*:}" ] || say "$f: relaycore/ includes only relaycore/ and proto/"
done
for f in $(angled mod_relay_https); do
    case "${f##*:}" in curl/*) say "$f: the module must not include curl" ;; esac
done
for f in $(quoted mod_relay_https); do
    n=${f##*:}
    [ -f "mod_relay_https/$n" ] || [ -f "relaycore/$n" ] || [ -f "proto/$n" ] ||
        say "$f: the module includes only its own, relaycore/ and proto/ headers"
done
for f in $(angled client); do
    echo "${f##*:}" | grep -Eq "$HTTPD" && say "$f: the client must not include httpd or APR"
done
for f in $(quoted client); do
    n=${f##*:}
    [ -f "client/$n" ] || [ -f "proto/$n" ] || say "$f: the client includes only client/ and proto/"
done
# the glue files carry the mod_ prefix, the client's rhc_, the shared ones rh_
for f in mod_relay_https/*.[ch]; do
    case "${f##*/}" in mod_*) ;; *) say "$f: glue files are named mod_*" ;; esac
done
for f in proto/*.[ch] relaycore/*.[ch]; do
    case "${f##*/}" in rh_*) ;; *) say "$f: proto/ and relaycore/ files are named rh_*" ;; esac
done
for f in client/*.[ch]; do
    case "${f##*/}" in rhc_*|relay-https.c) ;; *) say "$f: client files are named rhc_*" ;; esac
done
[ $fail = 0 ] && echo "check-layout: include rules hold (proto/, relaycore/, mod_relay_https/, client/)"
exit $fail
