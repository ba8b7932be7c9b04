import pytest

from roomee.kit.events import topic_matches


@pytest.mark.parametrize(
    "binding, routing_key, expected",
    [
        ("roomee.notification.#", "roomee.notification.page.created", True),
        ("roomee.notification.#", "roomee.notification", True),  # '#' matches zero words
        ("roomee.notification.#", "roomee.notificationx.page", False),
        ("roomee.notification.#", "roomee.storage.media", False),
        ("roomee.storage.media", "roomee.storage.media", True),
        ("roomee.storage.media", "roomee.storage.media.extra", False),
        ("roomee.storage.media", "roomee.storage", False),
        ("roomee.*.media", "roomee.storage.media", True),
        ("roomee.*.media", "roomee.media", False),  # '*' is exactly one word
        ("roomee.*.media", "roomee.a.b.media", False),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        ("*", "", True),  # the empty routing key is one empty word
        ("#", "", True),
        ("#", "a.b.c", True),
        ("#.c", "c", True),
        ("#.c", "a.b.c", True),
        ("#.c", "a.b.c.d", False),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.c", True),
        ("a.#.c", "a.x.y.d", False),
        ("a.#.#.c", "a.c", True),
        ("#.#", "a", True),
        ("a.*.#", "a", False),
        ("a.*.#", "a.b", True),
        ("a.*.#", "a.b.c.d", True),
        ("*.#.*", "a", False),
        ("*.#.*", "a.b", True),
        ("roomee.notification.workspace.*", "roomee.notification.workspace.created", True),
        ("roomee.notification.workspace.*", "roomee.notification.workspace", False),
        ("a..b", "a..b", True),  # empty words are words
        ("a.*.b", "a..b", True),
    ],
)
def test_topic_matching(binding, routing_key, expected):
    assert topic_matches(binding, routing_key) is expected
