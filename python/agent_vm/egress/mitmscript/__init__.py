"""The file mitmproxy loads (`--scripts .../mitmscript/load.py`).

A folder of its own: mitmproxy puts a script's folder first on sys.path
while loading it, where egress/'s module names (secrets, setup) would
shadow the standard library's.
"""
