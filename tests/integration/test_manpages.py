"""The man pages (docs/man/) cannot silently fall out of step with the code:
relay-https(1) has an item headed exactly as `relay-https --help` (laid out
from the client's option table) heads each option, same short and long name
and argument, in the same order, and no other option item; every long option
the client parses is an item too; every directive of the module's command
table (AP_INIT_* in mod_relay_https/*.c) is an item of relay_https(5), every
exit code of --help is listed, and both pages render without warnings."""

import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAN = os.path.join(ROOT, "docs", "man")
CLIENT_PAGE = os.path.join(MAN, "relay-https.1")
MODULE_PAGE = os.path.join(MAN, "relay_https.5")


def _roff_text(s):
    """A roff line as plain text: escapes and font changes undone."""
    s = re.sub(r"\\f[BIRP]|\\f\(\w\w|\\f\[\w*\]", "", s)
    s = s.replace("\\-", "-").replace("\\(aq", "'").replace("\\e", "\\").replace("\\&", "")
    s = re.sub(r"^\.(B|I|BI|IB|BR|RB|IR|RI)\s+", "", s)
    return s.replace('"', "")


# font macros whose arguments roff sets without spaces between them
_ALTERNATING = ("BR", "RB", "BI", "IB", "IR", "RI")


def _heading_text(line):
    """An item's heading as the reader sees it: a font macro's arguments
    ("quoted" or words) joined as roff joins them, then escapes undone."""
    m = re.match(r"^\.(B|I|BR|RB|BI|IB|IR|RI)\s+(.*)$", line)
    if m:
        words = [w[1:-1] if w.startswith('"') else w
                 for w in re.findall(r'"[^"]*"?|\S+', m.group(2))]
        line = ("" if m.group(1) in _ALTERNATING else " ").join(words)
    return _roff_text(line)


def item_headings(path):
    """The heading line of every .TP item (and of every .TQ continuation)."""
    lines = open(path, encoding="utf-8").read().splitlines()
    return [_heading_text(lines[i + 1]) for i, l in enumerate(lines[:-1])
            if l.strip() in (".TP", ".TQ") or l.startswith(".TP ")]


def _one_space(s):
    return " ".join(s.split())


def _has_option(headings, opt):
    pat = re.compile(r"(?<![\w-])%s(?![\w.-])" % re.escape(opt))
    return any(pat.search(h) for h in headings)


def _help_text(client_bin):
    r = subprocess.run([client_bin, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout


def help_option_heads(text):
    """The head of every option of --help's Options, one space apart:
    ['-L, --listen [ADDR:]PORT[:TARGET]', ..., '-V, --version']. rhc_help.c
    starts an option's text at column 29 when the head ends before column 29
    (so index 28 is a space), else two spaces after it."""
    part = text.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
    heads = []
    for line in part.splitlines():
        if re.match(r"^  (-\w, |    )--\w", line):   # not a wrapped line (column 29)
            head = line[:28] if line[28:29] == " " else re.match(r"^.*?\S(?=  |$)", line).group(0)
            heads.append(_one_space(head))
    return heads


def help_options(text):
    """The options --help heads: '-L', '--listen', '--no-resume', ..."""
    opts = []
    for head in help_option_heads(text):
        opts += [o for o in re.match(r"^(?:(-\w), )?(--[\w.-]+)", head).groups() if o]
    return opts


def page_option_heads(path):
    """The headings of the page's items that name options (start with '-')."""
    return [_one_space(h) for h in item_headings(path) if h.startswith("-")]


def source_long_options():
    """The long options the client parses (getopt_long's table in rhc_opts.c)."""
    src = open(os.path.join(ROOT, "client", "rhc_opts.c"), encoding="utf-8").read()
    return ["--" + n for n in re.findall(r'\{\s*"([\w.-]+)",\s*(?:no|required|optional)_argument',
                                         src)]


def directives():
    names = []
    for f in sorted(glob.glob(os.path.join(ROOT, "mod_relay_https", "*.c"))):
        names += re.findall(r'AP_INIT_\w+\(\s*"(\w+)"', open(f, encoding="utf-8").read())
    return names


def test_every_help_option_is_in_relay_https_1(client_bin):
    opts = help_options(_help_text(client_bin))
    assert len(opts) >= 20, opts          # the parser above still understands --help
    headings = item_headings(CLIENT_PAGE)
    missing = [o for o in opts if not _has_option(headings, o)]
    assert not missing, "options of relay-https --help missing from %s: %s" % (CLIENT_PAGE, missing)


def test_relay_https_1_heads_options_as_help_does(client_bin):
    """Same short and long option and argument, item for item, in --help's order;
    no option item --help lacks (the option table is the one source)."""
    heads = help_option_heads(_help_text(client_bin))
    assert len(heads) >= 20 and "-u, --user USER[:PASS]" in heads, heads
    page = page_option_heads(CLIENT_PAGE)
    missing = [h for h in heads if h not in page]
    extra = [h for h in page if h not in heads]
    assert not missing and not extra, (
        "%s is out of step with relay-https --help:\n  --help heads, the page does not: %s\n"
        "  the page heads, --help does not: %s" % (CLIENT_PAGE, missing, extra))
    assert page == heads, "%s lists the options in another order than --help:\n%s\n%s" % (
        CLIENT_PAGE, page, heads)


def test_every_parsed_long_option_is_in_relay_https_1():
    """From the source, so that this holds without a built client too."""
    opts = source_long_options()
    assert "--listen" in opts and "--transport" in opts, opts
    headings = item_headings(CLIENT_PAGE)
    missing = [o for o in opts if not _has_option(headings, o)]
    assert not missing, "long options of client/rhc_opts.c missing from %s: %s" % (
        CLIENT_PAGE, missing)


def test_modes_and_exit_codes_of_help_are_in_relay_https_1(client_bin):
    text = _help_text(client_bin)
    page = open(CLIENT_PAGE, encoding="utf-8").read()
    headings = item_headings(CLIENT_PAGE)
    for mode in ("forward", "stdio"):
        assert mode in headings, "mode %s is not an item of %s" % (mode, CLIENT_PAGE)
    codes = re.findall(r"^\s{1,3}(\d{1,2})\s{2}\S", text.split("Exit codes:", 1)[1], re.M)
    assert "0" in codes and "10" in codes, codes
    status = page.split(".SH EXIT STATUS", 1)[1].split("\n.SH", 1)[0]
    listed = re.findall(r"^\.TP\n\.B (\d+)$", status, re.M)
    missing = [c for c in codes if c not in listed]
    assert not missing, "exit codes of --help missing from EXIT STATUS: %s" % missing


def test_every_directive_is_in_relay_https_5():
    names = directives()
    assert "RelayTarget" in names and len(names) >= 15, names
    headings = item_headings(MODULE_PAGE)
    missing = [n for n in names
               if not any(re.match(r"%s(\s|$)" % n, h) for h in headings)]
    assert not missing, "directives of the command table missing from %s: %s" % (
        MODULE_PAGE, missing)


def test_pages_name_each_other_and_the_debian_packaging():
    """debian/*.manpages installs exactly the pages that exist."""
    listed = []
    for f in glob.glob(os.path.join(ROOT, "debian", "*.manpages")):
        listed += open(f).read().split()
    pages = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(MAN, "*.[1-8]")))
    if listed:
        assert sorted(listed) == pages, (listed, pages)


@pytest.mark.parametrize("page", [CLIENT_PAGE, MODULE_PAGE], ids=os.path.basename)
def test_page_renders_without_warnings(page):
    if not shutil.which("man"):
        pytest.skip("man is not installed")
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    r = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert "SYNOPSIS" in r.stdout
