"""The audit record of one request to ``enclave serve``: who (the key's name, or none on a
keyless loopback request), which model or library, how many tokens in and out, the HTTP status,
how long, and from where — never the prompt or the reply."""

from __future__ import annotations

from app.enforcement import Enforcer


def record_request(enforcer: Enforcer, *, key: str | None, model: str, tokens_in: int, tokens_out: int,
                   status: int, seconds: float, client: str) -> None:
    """One ``serve.request`` record (nothing when the policy keeps no audit log). ``key`` is the
    key's name, never its secret; ``client`` the peer's address."""
    enforcer.record("serve.request", key=key, model=model, tokens_in=int(tokens_in), tokens_out=int(tokens_out),
                    status=int(status), seconds=round(float(seconds), 3), client=client)
