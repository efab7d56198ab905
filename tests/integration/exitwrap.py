"""Runs a command in its own place and notes how it ended: for ssh's
ProxyCommand, whose exit code and stderr ssh throws away.

    exitwrap.py OUTFILE COMMAND [ARG...]

The command inherits stdin, stdout and stderr; this process then lets go of its
own copies of stdin and stdout, so the command sees ssh close them. A SIGHUP,
SIGTERM or SIGINT sent here (ssh sends SIGHUP right after closing the pipes) is
passed on at once. When the command exits, OUTFILE gets one line:
"<exit code> <seconds from the signal to the exit, -1 without a signal>".
"""

import os
import signal
import subprocess
import sys
import time


def main():
    out, cmd = sys.argv[1], sys.argv[2:]
    got = []
    child = subprocess.Popen(cmd)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)

    def forward(sig, frame):
        if not got:
            got.append(time.monotonic())
        try:
            child.send_signal(sig)
        except ProcessLookupError:
            pass

    for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(s, forward)
    rc = child.wait()
    took = time.monotonic() - got[0] if got else -1.0
    with open(out + ".tmp", "w") as f:
        f.write("%d %.4f\n" % (rc, took))
    os.rename(out + ".tmp", out)


if __name__ == "__main__":
    main()
