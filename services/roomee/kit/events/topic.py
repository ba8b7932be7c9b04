"""AMQP topic matching: binding keys against routing keys.

Both are dot-separated words. In a binding key ``*`` matches exactly one word and ``#`` matches
zero or more words; any other word matches itself. This is what a RabbitMQ topic exchange does,
and the embedded bus routes with it.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def topic_matches(binding_key: str, routing_key: str) -> bool:
    """Whether a message published with ``routing_key`` reaches a queue bound with ``binding_key``."""
    pattern = binding_key.split(".")
    words = routing_key.split(".")
    # reachable[j]: the pattern prefix consumed so far can match the first j words.
    reachable = [False] * (len(words) + 1)
    reachable[0] = True
    for part in pattern:
        nxt = [False] * (len(words) + 1)
        if part == "#":
            seen = False
            for j in range(len(words) + 1):
                seen = seen or reachable[j]
                nxt[j] = seen
        else:
            for j in range(len(words)):
                if reachable[j] and (part == "*" or part == words[j]):
                    nxt[j + 1] = True
        reachable = nxt
        if not any(reachable):
            return False
    return reachable[len(words)]
