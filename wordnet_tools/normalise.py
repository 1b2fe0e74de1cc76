"""Tag normalisation: the one string transform applied to both WordNet lemmas and raw tags.

Lemmas and hashtags must meet in the same space, so `#BrownBear`, `brown_bear`, `Brown-Bear`
and `brownbear` all become `brownbear`. Anything that is not a letter or digit in any script is
dropped (punctuation, `#`, `_`, spaces, emoji); what remains is case-folded after NFKC so
full-width and ligature forms fold onto plain ones.
"""

from __future__ import annotations

import re
import unicodedata

# Tags longer than this after normalisation cannot name a WordNet noun (the longest noun lemma
# is 64 characters once separators are removed), so they are rejected before any lookup.
MAX_FORM_LENGTH = 80
# Raw tags longer than this are rejected without being normalised, so a 1 MB "tag" costs nothing.
MAX_RAW_LENGTH = 1024

_NOT_ALNUM = re.compile(r"[\W_]+")


def normalise_tag(tag: object) -> str | None:
    """Return the normalised form of a raw tag, or None when nothing usable is left.

    None for: non-strings (bytes that are not UTF-8 included), empty or symbol-only tags,
    digits-only tags (years, counts: never a visual concept), tags too long to be a noun.
    """
    if isinstance(tag, bytes | bytearray):
        try:
            tag = bytes(tag).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(tag, str) or not tag or len(tag) > MAX_RAW_LENGTH:
        return None
    form = _NOT_ALNUM.sub("", unicodedata.normalize("NFKC", tag).casefold())
    if not form or len(form) > MAX_FORM_LENGTH or form.isdigit():
        return None
    return form
