"""VM names from branch names.

A VM name is used as a directory name, a QEMU `-name`, a guest host name and
an SSH host-key alias, so it must be short, lowercase ASCII and free of
anything a shell, a path or QEMU's option parser would read specially. It
must also be unique: `feature/x` and `feature-x` look alike once slugged, and
two repositories both have a `main`, so a short hash of the repository and
the branch always follows the slug.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

SLUG_MAX = 40
HASH_LEN = 8
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def slug(text: str) -> str:
    """Lowercase ASCII letters, digits and single dashes; never empty."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    s = s[:SLUG_MAX].rstrip("-")
    return s or "vm"


def vm_name(repo: str, branch: str) -> str:
    """The VM name for `branch` of the repository at absolute path `repo`."""
    digest = hashlib.sha256(f"{repo}\0{branch}".encode("utf-8", "surrogateescape")).hexdigest()
    return f"{slug(branch)}-{digest[:HASH_LEN]}"


def is_vm_name(text: str) -> bool:
    return bool(NAME_RE.match(text))
