"""Subscription commands, decided without I/O: what a client's types become, or why not."""

from __future__ import annotations

import functools

from sigma.protocol.client_frames import (
    ListSubscriptions,
    ProtocolViolation,
    Subscribe,
    Unsubscribe,
)
from sigma.protocol.codes import ErrorCode

SubscriptionCommand = Subscribe | Unsubscribe | ListSubscriptions


def subscriptions_after(
    current: frozenset[str],
    allowed: frozenset[str],
    command: SubscriptionCommand,
    max_subscriptions: int,
) -> frozenset[str]:
    """The types a client subscribed to `current` has after `command`: unchanged for a list,
    without the given ones for an unsubscribe, with them for a subscribe. `ProtocolViolation`
    (the error reply to send) for a subscribe to a type outside `allowed` (`forbidden`), or
    past `max_subscriptions` (`too_many_subscriptions`)."""
    if isinstance(command, ListSubscriptions):
        return current
    requested = frozenset(command.types)
    if isinstance(command, Unsubscribe):
        return current - requested
    forbidden = requested - allowed
    if forbidden:
        raise ProtocolViolation(
            ErrorCode.FORBIDDEN,
            f"not allowed to subscribe to {', '.join(sorted(forbidden))}",
            command.id,
        )
    wanted = current | requested
    if len(wanted) > max_subscriptions:
        raise ProtocolViolation(
            ErrorCode.TOO_MANY_SUBSCRIPTIONS,
            f"at most {max_subscriptions} subscriptions per client",
            command.id,
        )
    return wanted


@functools.lru_cache(maxsize=4096)
def shared_types(types: frozenset[str]) -> frozenset[str]:
    """`types`, or the equal set met first: clients with the same types share one set.

    Every client holds its subscriptions and allowed types for as long as it is connected, and a
    set of eight names is about 700 bytes; the sets are subsets of the known event types, so
    there are few distinct ones.
    """
    return types
