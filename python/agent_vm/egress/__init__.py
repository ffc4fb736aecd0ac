"""Egress by domain: the per-VM proxy that is a `--network allow` guest's only way out.

QEMU (`restrict=on` plus one `guestfwd`) hands every guest connection to
10.0.2.100:3128 to a relay that connects to `<vm>/egress/proxy.sock`; the
engine (mitmproxy, driven by `addon.py`) decides per request, injects
secrets, and logs each decision. Modules, one job each:

* `patterns`  allowlist patterns: parsing and matching
* `policy`    the decision for one request (pure; no mitmproxy)
* `secrets`   `agent-vm secret add/list/remove`, placeholders, values
* `setup`     the files `start` writes for the proxy and the guest
* `netlog`    the decision log: append, read, count, render
* `engine`    the `agent-vm-egress` program the runner starts
* `bridge`    unix socket -> the engine's loopback port, nobody else's
* `addon`     the mitmproxy addon (imported only inside the engine)
"""
