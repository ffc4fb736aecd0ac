"""Print an apt source (deb822) for <codename>-backports, made from the
machine's own Debian source for <codename>: same mirror, same keyring.

run-tests uses it to install QEMU 10 on bookworm without writing a mirror
host name of its own (machines here reach only their configured mirror).
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCES_DIR = Path("/etc/apt/sources.list.d")
ONE_LINE = Path("/etc/apt/sources.list")


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas, cur = [], {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur = {}
        elif line.startswith("#"):
            continue
        elif line[0].isspace() and key:
            cur[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            cur[key.strip()] = value.strip()
    return stanzas


def _candidates() -> list[tuple[str, str, str | None]]:
    """(types, uri, signed-by) of every source with its suites."""
    found: list[tuple[str, str, str | None]] = []
    for f in sorted(SOURCES_DIR.glob("*.sources")):
        for st in _deb822_stanzas(f.read_text()):
            if st.get("Enabled", "yes").lower() == "no":
                continue
            suites = st.get("Suites", "")
            for uri in st.get("URIs", "").split():
                found.append((st.get("Types", ""), f"{uri} {suites}", st.get("Signed-By")))
    lists = [ONE_LINE, *sorted(SOURCES_DIR.glob("*.list"))]
    for f in lists:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            words = line.split()
            if not words or words[0] != "deb":
                continue
            signed = None
            if words[1].startswith("["):
                opts = []
                while not words[1].endswith("]"):
                    opts.append(words.pop(1))
                opts.append(words.pop(1))
                for o in " ".join(opts).strip("[]").split():
                    if o.startswith("signed-by="):
                        signed = o.split("=", 1)[1]
            found.append(("deb", f"{words[1]} {words[2]}", signed))
    return found


def main(codename: str) -> int:
    for types, uri_suites, signed in _candidates():
        uri, *suites = uri_suites.split()
        if "deb" in types.split() and codename in suites:
            print("Types: deb")
            print(f"URIs: {uri}")
            print(f"Suites: {codename}-backports")
            print("Components: main")
            if signed:
                print(f"Signed-By: {signed}")
            return 0
    sys.stderr.write(f"backports_source: no Debian source for {codename!r} found\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
