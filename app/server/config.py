"""How ``enclave serve`` listens: the address, keys or not, TLS or not — decided and checked
before anything starts, and said in a few lines at start."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from app.enforcement import Enforcer
from app.hosting import check_port_free
from app.policy import is_loopback
from inference.errors import EnclaveError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_PER_KEY = 8  # requests one key may have waiting or running at once
DEFAULT_PARALLEL = 4  # a model's requests decoded together (the worker's batch holds up to 8)


@dataclass(frozen=True)
class ServeConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    model: str | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False
    per_key: int = DEFAULT_PER_KEY
    parallel: int = DEFAULT_PARALLEL
    keys_required: bool = True  # decided by ``checked``: the policy and the address

    @property
    def tls(self) -> bool:
        return self.cert is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/v1"


def checked(config: ServeConfig, enforcer: Enforcer) -> ServeConfig:
    """``config`` as it may run, or an ``EnclaveError`` (the policy's refusal, TLS missing or
    unusable, the port taken): all said before a model loads or a line says "Serving"."""
    refusal = enforcer.policy.serve_refusal(config.host)
    if refusal:
        rule = "serve_bind" if "serve_bind" in refusal else "serve"  # the sentence names the rule that refused
        enforcer.refuse(rule, refusal, host=config.host, port=config.port)
    if (config.cert is None) != (config.key is None):
        raise EnclaveError("TLS needs both --cert FILE and --key FILE.")
    for path in (config.cert, config.key):
        if path is not None and not path.is_file():
            raise EnclaveError(f"There is no file {path} (for TLS).")
    if config.cert is not None and config.key is not None:
        try:  # what uvicorn will do, said now in a sentence instead of after "Serving …"
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(config.cert, config.key)
        except (ssl.SSLError, OSError) as exc:
            raise EnclaveError(f"The TLS certificate {config.cert} and key {config.key} cannot be used together "
                               f"({getattr(exc, 'reason', None) or exc.strerror or exc}): both must be PEM, the "
                               "key unencrypted and matching the certificate.") from None
    check_port_free(config.host.strip("[]"), config.port)
    if not is_loopback(config.host) and not config.tls and not config.insecure:
        raise EnclaveError(f"Serving on {config.host} reaches other machines: give --cert FILE --key FILE for TLS "
                           "(or --insecure to send prompts, replies and keys in clear text).")
    keyless = enforcer.policy.allows_keyless(config.host)
    return ServeConfig(config.host, config.port, config.model, config.cert, config.key, config.insecure,
                       config.per_key, keys_required=not keyless)


def insecure_warning(config: ServeConfig) -> str | None:
    """Said on every start of a server other machines reach without TLS."""
    if config.tls or is_loopback(config.host):
        return None
    return (f"Warning: --insecure: {config.host}:{config.port} serves without TLS. Anyone on the network path can "
            "read prompts, replies and API keys.")


def start_lines(config: ServeConfig, model: str | None) -> list[str]:
    keys = ("every request needs an API key ('enclave keys create NAME')" if config.keys_required
            else "no key needed on this machine (the policy allows keyless use on loopback)")
    return [f"Serving the OpenAI API at {config.url}",
            f"Keys: {keys}",
            f"TLS: {'on' if config.tls else 'off'}",
            f"Model: {model or 'as each request names it (GET /v1/models)'}",
            f"At once: {config.parallel} requests per model, decoded together (--parallel); more wait in line",
            "Ctrl-C stops."]
