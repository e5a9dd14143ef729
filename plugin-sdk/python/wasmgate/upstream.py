"""The upstream groups, and what `select_upstream` returns."""

from dataclasses import dataclass
from typing import Optional

from wit_world.imports import types as _types
from wit_world.imports import upstream as _upstream

from ._errors import EditError, call


def group() -> str:
    """The route's upstream group."""
    return _upstream.group()


def backends(group: Optional[str] = None) -> Optional[list]:
    """The backends (`address`, `weight`, `healthy`, `ejected`) of `group`, the route's group
    if none; None if no such group exists."""
    return _upstream.backends(group)


def set_sni(name: str) -> None:
    """Only in `select_upstream`."""
    call(EditError, _upstream.set_sni, name)


@dataclass
class Choice:
    """A `select_upstream` answer; build it with the functions below."""

    wit: object


def backend(index: int) -> Choice:
    """The backend at `index` of the route group's `backends`."""
    return Choice(_types.UpstreamChoice_Backend(index))


def to_group(name: str, index: Optional[int] = None) -> Choice:
    """Another configured group (balanced by its own balancer), or one of its backends."""
    if index is None:
        return Choice(_types.UpstreamChoice_Group(name))
    return Choice(_types.UpstreamChoice_GroupBackend((name, index)))


def hash_key(key: str) -> Choice:
    """A backend of the route's group picked by hashing `key`: the same key, the same backend."""
    return Choice(_types.UpstreamChoice_HashKey(key))
