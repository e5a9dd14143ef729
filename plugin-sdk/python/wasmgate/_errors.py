"""The exceptions host calls raise, built from the host's `result` errors."""

from componentize_py_types import Err


def _kind(value: object) -> str:
    """`EditError_ReadOnly` -> `read-only`: the WIT case name of a generated variant."""
    name = type(value).__name__.split("_", 1)[-1]
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


class HostError(Exception):
    """A host call refused what the plugin asked. `kind` is the WIT case (e.g. `read-only`);
    `message` is the host's detail, when it gives one."""

    def __init__(self, kind: str, message: str = ""):
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}" if message else kind)

    @classmethod
    def of(cls, err: Err) -> "HostError":
        value = err.value
        return cls(_kind(value), str(getattr(value, "value", "") or ""))


class EditError(HostError):
    """The host refused a header, status or path edit (`invalid-name`, `invalid-value`,
    `invalid-status`, `invalid-path`, `read-only`, `reserved-header`)."""


class StoreError(HostError):
    """The shared store refused an operation (`too-large`, `not-an-integer`, `unavailable`)."""


class OutboundError(HostError):
    """An outbound call failed (`unknown-group`, `invalid-request`, `timeout`, `too-large`,
    `failed`, `not-allowed`)."""


def call(error: type, host_function, *args):
    """Calls `host_function`, turning the host's `Err` into `error`."""
    try:
        return host_function(*args)
    except Err as err:
        raise error.of(err) from None
