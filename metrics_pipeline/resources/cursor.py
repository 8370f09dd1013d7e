"""A source's cursor: how far its changes were read."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardCursor:
    """The highest Id read, and the Ids below it that did not exist yet when it was read (their
    transactions had not committed): those are asked for again."""

    position: int
    pending: tuple[int, ...] = ()
