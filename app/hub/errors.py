"""The errors of hub access, and the one place that turns huggingface_hub's and the HTTP
library's exceptions into messages that say what happened and what to do."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from app.enforcement import Enforcer
from inference.errors import EnclaveError

OFFLINE_ENV = "ENCLAVE_OFFLINE"
TOKENS_PAGE = "https://huggingface.co/settings/tokens"


class HubError(EnclaveError):
    """Listing, searching or downloading from the Hugging Face hub failed."""


class OfflineError(HubError):
    """Enclave is set to work offline: nothing may go to the network."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (
            f"Enclave is set to work offline ({OFFLINE_ENV}=1 or the offline setting); downloads are off. "
            f"Unset {OFFLINE_ENV} or turn the offline setting off to download, or copy the GGUF file onto "
            "this machine and import it."))


class NoNetworkError(HubError):
    """The hub's name cannot be resolved: this machine has no network (or no DNS)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(
            f"No network: {host} cannot be found ({reason}), so this machine seems to have no internet connection. "
            "Connect it (or set HTTPS_PROXY for a proxy) and try again, or copy the GGUF file onto this machine "
            "and run 'enclave models import PATH'.")


class DownloadCancelled(HubError):
    """The caller cancelled a download. What was downloaded is kept for a resume."""


def offline_enabled() -> bool:
    """Whether ``ENCLAVE_OFFLINE`` asks for no network at all (1, true, yes or on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def refuse_if_offline(offline: bool, action: str, enforcer: Enforcer | None = None) -> None:
    """Raise :class:`OfflineError` when offline, or the policy's refusal when the organisation
    turned downloads off; called before anything can open a socket. ``enforcer``: the one the
    caller holds (default: the policy in force, read now)."""
    (enforcer or Enforcer.in_force()).check_downloads(action)
    if offline or offline_enabled():
        raise OfflineError()


def gated_message(repo_id: str, status: int | None, token_sent: bool) -> str:
    answer = f" (HTTP {status})" if status else ""
    if token_sent:
        return (f"The hub refused the saved token for {repo_id}{answer}: the repository is gated or private and "
                f"this token has no access to it. Sign in on huggingface.co, accept the model's terms on "
                f"https://huggingface.co/{repo_id}, then create a read token at {TOKENS_PAGE} and run "
                "`enclave auth login` with it.")
    return (f"{repo_id} is gated or private: the hub refused access without a token{answer}. Sign in on "
            f"huggingface.co, accept the model's terms on https://huggingface.co/{repo_id}, create a read token "
            f"at {TOKENS_PAGE} and run `enclave auth login` with it, then try again.")


@contextmanager
def translated(doing: str, *, repo_id: str, endpoint: str, token_sent: bool,
               refused: str | None = None) -> Iterator[None]:
    """Re-raise huggingface_hub's and httpx's exceptions as :class:`HubError`.

    ``doing`` completes "... while <doing>" in messages, e.g. "listing the files of org/repo";
    ``refused`` replaces the gated-repo message for a 401/403 that is not about one repository.
    """
    import httpx2
    from huggingface_hub import errors as hf

    try:
        yield
    except HubError:
        raise
    except hf.OfflineModeIsEnabled as e:
        raise OfflineError(
            "huggingface_hub is set to work offline (HF_HUB_OFFLINE=1), so downloads are off. Unset HF_HUB_OFFLINE "
            "to download, or copy the GGUF file onto this machine and import it.") from e
    except hf.HFValidationError as e:
        raise HubError(f"{repo_id!r} is not a valid repository name ({e}). Use the form owner/name, e.g. "
                       "Qwen/Qwen3-30B-A3B-GGUF.") from e
    except hf.HfHubHTTPError as e:
        status = e.response.status_code if getattr(e, "response", None) is not None else None
        if refused is not None and status in (401, 403):
            raise HubError(refused) from e
        raise _http_error(e, doing, repo_id, endpoint, token_sent) from e
    except hf.FileMetadataError as e:
        raise HubError(f"The server at {endpoint} did not answer like the Hugging Face hub while {doing} ({e}). "
                       "Check HF_ENDPOINT and your proxy settings.") from e
    except httpx2.ProxyError as e:
        raise HubError(f"The proxy refused the connection while {doing} ({e}). Check HTTPS_PROXY / "
                       "HTTP_PROXY and the proxy's credentials.") from e
    except httpx2.TransportError as e:
        raise HubError(
            f"Could not reach {endpoint} while {doing} ({type(e).__name__}: {e}). Check the internet connection "
            "and proxy settings (HTTPS_PROXY), then try again. If your network inspects TLS, point SSL_CERT_FILE "
            "at its certificate: Enclave never turns certificate checks off.") from e


def _http_error(e: Exception, doing: str, repo_id: str, endpoint: str, token_sent: bool) -> HubError:
    from huggingface_hub import errors as hf

    response = getattr(e, "response", None)
    status = response.status_code if response is not None else None
    if isinstance(e, hf.GatedRepoError) or status in (401, 403):
        message = gated_message(repo_id, status, token_sent)
        if isinstance(e, hf.RepositoryNotFoundError) and not isinstance(e, hf.GatedRepoError):
            message += " The hub answers the same for a repository that does not exist, so check the name too."
        return HubError(message)
    if isinstance(e, hf.RevisionNotFoundError):
        return HubError(f"{repo_id} has no such revision (while {doing}). Check the branch, tag or commit, "
                        "or leave the revision out to use main.")
    if isinstance(e, hf.RemoteEntryNotFoundError):
        return HubError(f"The file is not in {repo_id} at this revision (while {doing}). List the repository's "
                        "files again and choose one of them.")
    if isinstance(e, hf.RepositoryNotFoundError) or status == 404:
        return HubError(f"There is no model repository {repo_id!r} on {endpoint} (or it is private and your "
                        "token has no access). Check the name, in the form owner/name.")
    if status == 429:
        return HubError(f"The hub is limiting requests (HTTP 429) while {doing}. Wait a few minutes and try again.")
    if status is not None and status >= 500:
        return HubError(f"The hub had a problem (HTTP {status}) while {doing}. Try again later.")
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return HubError(f"The hub refused the request while {doing} (HTTP {status}): {first_line}")
