"""The one shape of a per-row failure: a short machine-readable reason and a human detail.

Fetching and image preparation raise subclasses of `RowReject`; the ingest job records
`reason` and `detail` in `index/rejects/` and goes on with the next row.
"""

from __future__ import annotations


class RowReject(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail
