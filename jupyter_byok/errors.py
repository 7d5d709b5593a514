"""The jupyter_byok error tree.

Every expected failure is a ``ByokError`` whose ``str()`` is one line that says what
went wrong and what to do about it. Messages never carry a secret: ``ByokError``
passes its message through :func:`jupyter_byok.redact.redact` on the way in.

Foreign errors (``httpx``, ``sqlite3``, ``cryptography.exceptions.InvalidTag``, ``OSError``)
are translated at the boundary with ``raise ... from exc``::

    ByokError
    ├── ConfigError                 bad configuration file or value
    │   ├── ModelIdError            a model id that does not parse or names nothing known
    │   ├── UnknownProviderError    a provider name nobody registered
    │   └── KeyOriginError          a key asked to go to an origin it is not bound to
    ├── InvalidInputError           a call argument or request body fails its schema (also ValueError)
    ├── KeystoreError               anything about the encrypted keystore
    │   ├── InvalidSecretError      a key value we refuse to store (empty, spaces, too long, ...)
    │   ├── KeystoreCorruptError    the file fails its integrity checks; it is kept as it is
    │   ├── MachineBindingError     the store was made on another machine (machine id changed)
    │   ├── KeystoreLockedError     passphrase mode and no (or a wrong) passphrase
    │   └── KeystorePermissionError files or folders readable by others and not repairable
    ├── MissingKeyError             no key for a provider: says how to add one
    ├── ProviderError               a provider answered with an error, or could not be reached
    │   ├── AuthenticationError     401/403: the key was refused
    │   ├── BadRequestError         400/404/422: the request or model was refused
    │   ├── RateLimitError          429 that may be retried
    │   ├── QuotaExceededError      429/402 for exhausted credit: never retried
    │   ├── ProviderServerError     5xx / 529 after retries
    │   ├── ProviderTimeoutError    no answer in time (the call may still be billed)
    │   ├── ProviderConnectionError could not connect
    │   ├── StreamError             a stream broke off or carried a malformed chunk
    │   └── ResponseTooLargeError   an answer or stream over the size cap (not retried)
    ├── LocalModelError             a local GGUF model could not be loaded or run
    ├── BudgetExceededError         a budget blocks the call
    ├── LedgerError                 the usage ledger could not be read or written
    │   └── LedgerUnavailableError  the ledger cannot take rows now: the call is refused unsent
    └── CancelledCallError          the caller cancelled the call
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ByokError",
    "CancelledCallError",
    "ConfigError",
    "InvalidInputError",
    "InvalidSecretError",
    "KeyOriginError",
    "KeystoreCorruptError",
    "KeystoreError",
    "KeystoreLockedError",
    "KeystorePermissionError",
    "LedgerError",
    "LedgerUnavailableError",
    "LocalModelError",
    "MachineBindingError",
    "MissingKeyError",
    "ModelIdError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "QuotaExceededError",
    "RateLimitError",
    "ResponseTooLargeError",
    "StreamError",
    "UnknownProviderError",
]


class ByokError(Exception):
    """Base class: one line, no secrets, says what to do."""

    def __init__(self, message: str) -> None:
        from .redact import redact

        # One line, always: tracebacks and multi-line provider bodies stay out of messages.
        clean = " ".join(redact(str(message)).split())
        super().__init__(clean)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(ByokError):
    pass


class ModelIdError(ConfigError):
    pass


class UnknownProviderError(ConfigError):
    pass


class KeyOriginError(ConfigError):
    """A key would go to an origin (scheme, host, port) other than the one it is bound to:
    nothing was sent."""


class InvalidInputError(ByokError, ValueError):
    """A call argument or a request body that fails its schema: an unknown field, a wrong
    JSON type, a number out of range (NaN, infinite), nesting too deep. Nothing was sent."""


class KeystoreError(ByokError):
    pass


class InvalidSecretError(KeystoreError):
    pass


class KeystoreCorruptError(KeystoreError):
    pass


class MachineBindingError(KeystoreError):
    pass


class KeystoreLockedError(KeystoreError):
    pass


class KeystorePermissionError(KeystoreError):
    pass


class MissingKeyError(ByokError):
    pass


class ProviderError(ByokError):
    """A provider call failed. Carries what the ledger needs, never the request body."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id
        self.error_type = error_type
        self.retry_after = retry_after


class AuthenticationError(ProviderError):
    pass


class BadRequestError(ProviderError):
    pass


class RateLimitError(ProviderError):
    pass


class QuotaExceededError(ProviderError):
    pass


class ProviderServerError(ProviderError):
    pass


class ProviderTimeoutError(ProviderError):
    pass


class ProviderConnectionError(ProviderError):
    pass


class StreamError(ProviderError):
    pass


class ResponseTooLargeError(ProviderError):
    """An answer (or a stream) over the size cap: reading stopped there, never retried."""


class LocalModelError(ByokError):
    pass


class BudgetExceededError(ByokError):
    pass


class LedgerError(ByokError):
    pass


class LedgerUnavailableError(LedgerError):
    """The ledger is known not to take rows (disk full, read-only, unreadable, or earlier
    rows still unwritten): the call is refused before anything is sent to a provider."""


class CancelledCallError(ByokError):
    pass
