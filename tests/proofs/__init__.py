"""Proofs of trust that take longer than a unit test: repeated SIGKILLs (``kills``) and a
soak run (``soak``). Each runs as ``python -m tests.proofs.<name>`` (``make kill-test``,
``make soak-test``) and prints its figures; ``tests/test_proofs.py`` runs a small version
of both in the normal suite. Linux only: processes, memory and file handles are read
from /proc."""
