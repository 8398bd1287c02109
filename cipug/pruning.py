"""What pruning leaves: the images of each entry's pin and of its last KEEP_IMAGES earlier pins.

`image prune` removes images without a tag, and an image pulled by digest has none: without
more, the images an update replaced would be gone, and a rollback would need the registry. So
before it prunes, cipug tags the images to keep `<repository>:cipug-keep-<digest>`, and takes
that tag off images no longer kept, which the prune then removes. Which pins those are is read
from history: the pins that ran, newest first.
"""

from __future__ import annotations

from collections.abc import Iterable

from .files import history

KEEP_TAG_PREFIX = "cipug-keep-"
# Tags are at most 128 characters; 16 hex digits of a digest tell images apart.
_DIGEST_CHARACTERS = 16


def keep_tag_suffix(pinned: str) -> str:
    """`cipug-keep-0123456789abcdef` for `…@sha256:0123456789abcdef…`."""
    return KEEP_TAG_PREFIX + pinned.rpartition("@")[2].removeprefix("sha256:")[:_DIGEST_CHARACTERS]


def keep_tag(pinned: str) -> str:
    """The tag that keeps the image of a pinned reference: `docker.io/library/nginx:cipug-keep-0123456789abcdef`."""
    return f"{pinned.rpartition('@')[0]}:{keep_tag_suffix(pinned)}"


def pins_to_keep(records: Iterable[history.Record], earlier: int) -> set[str]:
    """Per entry, the pin it runs and the `earlier` pins it ran before, from history records in order.

    The pins that ran are both sides of an update that took effect and of a rollback; not the pin
    of an update whose images did not come up, nor what a repair or a failure names.
    """
    ran: dict[tuple[str, str], list[str]] = {}
    for record in records:
        if not record.entry or record.did_not_come_up or record.outcome not in (history.UPDATED,
                                                                                 history.ROLLED_BACK):
            continue
        pins = ran.setdefault((record.service, record.entry), [])
        for pinned in (record.old, record.new):
            if pinned:
                if pinned in pins:
                    pins.remove(pinned)
                pins.append(pinned)
    return {pinned for pins in ran.values() for pinned in pins[::-1][:earlier + 1]}
