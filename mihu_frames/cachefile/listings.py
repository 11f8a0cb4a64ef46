"""The listing index: which cached pages belong together (table ``mihu_frames_pages``).

The pages of one conversation under one query that are used together must come from one
consistent listing of it: pages cached at different times disagree when sessions were deleted
or inserted in between (a deletion plus an insertion even keeps ``total``). So every page is
saved with the id of the fetch it belongs to (all pages of a query fetched in one load share
it) in this index, in the transaction that saves the page, and a load uses cached pages of a
query only when the index holds pages 1 to ``last_page`` of one listing, none expired
(:meth:`ListingIndex.complete`); otherwise it fetches the whole query anew, and indexing that
listing drops the query's older entries: only one listing of a query is ever whole. A page
read back whose listing is not the one planned (another process replaced it meanwhile) makes
the load fetch that query anew.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mihu_frames.cachefile.database import Database
from mihu_frames.cachefile.pages import PageToSave

logger = logging.getLogger("mihu_frames")

TABLE = "mihu_frames_pages"


@dataclass(frozen=True)
class CachedListing:
    """Pages 1 to ``last_page`` of one query, all from one listing, as the index holds them."""

    listing: str
    last_page: int
    keys: Mapping[int, str]
    #: The earliest expiry among the pages (Unix seconds), None when they never expire.
    expires: float | None

    def expired(self) -> bool:
        return self.expires is not None and self.expires <= time.time()


class ListingIndex:
    """The index of cached pages by query and listing; see the module.

    Parameters
    ----------
    database : Database
        The cache file whose ``mihu_frames_pages`` table this is.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    def __repr__(self) -> str:
        return f"ListingIndex({str(self.database.path)!r})"

    @staticmethod
    def create(db: sqlite3.Connection) -> None:
        """Create the table and its index where missing."""
        db.execute(
            f"create table if not exists {TABLE} (key text primary key, query text not null, "
            "page integer not null, listing text not null, last_page integer not null, "
            "expires real)"
        )
        db.execute(f"create index if not exists {TABLE}_query on {TABLE}(query)")

    def complete(self, queries: Iterable[str]) -> dict[str, CachedListing]:
        """The complete, consistent cached listing of each query that has one (expired too);
        nothing (logged) when the index cannot be read."""
        wanted = json.dumps(sorted(set(queries)))
        try:
            with self.database.connect() as db:
                rows = db.execute(
                    f"select query, page, key, listing, last_page, expires from {TABLE} "
                    "where query in (select value from json_each(?))",
                    (wanted,),
                ).fetchall()
        except sqlite3.Error as exc:  # only a cache: fetch everything instead
            logger.warning("could not read the page index of %s: %s", self.database.path, exc)
            return {}
        found: dict[str, dict[str, list[tuple[int, str, int, float | None]]]] = {}
        for query, page, key, listing, last_page, expires in rows:
            found.setdefault(query, {}).setdefault(listing, []).append(
                (page, key, last_page, expires)
            )
        complete: dict[str, CachedListing] = {}
        for query, by_listing in found.items():
            for listing, pages in by_listing.items():
                whole = _whole(listing, pages)
                if whole is not None:
                    complete[query] = whole
        return complete

    @staticmethod
    def add(db: sqlite3.Connection, pages: Sequence[PageToSave], expires: float | None) -> None:
        """Index saved pages under their listing, in the caller's transaction; the older
        listings of their queries go."""
        listings = sorted({(page.query, page.listing) for page in pages})
        db.executemany(f"delete from {TABLE} where query = ? and listing != ?", listings)
        db.executemany(
            f"insert or replace into {TABLE} values (?, ?, ?, ?, ?, ?)",
            [(p.key, p.query, p.page, p.listing, p.last_page, expires) for p in pages],
        )

    def remove(self, keys: Sequence[str]) -> None:
        """Drop the rows of these page keys, in a transaction of their own."""
        with self.database.connect() as db:
            db.execute(
                f"delete from {TABLE} where key in (select value from json_each(?))",
                (json.dumps(list(keys)),),
            )

    @staticmethod
    def clear(db: sqlite3.Connection) -> None:
        """Drop every row, in the caller's transaction."""
        db.execute(f"delete from {TABLE}")

    @staticmethod
    def changed(db: sqlite3.Connection, listings: Mapping[str, str]) -> str | None:
        """Why the index no longer holds exactly ``listings`` (per query key, one listing id),
        or None when it does: every query has rows, all of that listing (read in the caller's
        transaction)."""
        if not listings:
            return None
        held: dict[str, tuple[str, str]] = {
            query: (first, last)
            for query, first, last in db.execute(
                f"select query, min(listing), max(listing) from {TABLE} "
                "where query in (select key from json_each(?)) group by query",
                (json.dumps(listings),),
            )
        }
        for query, listing in listings.items():
            if query not in held:
                return f"the pages of query {query[:12]} are gone from the page index"
            if held[query] != (listing, listing):
                return (
                    f"the page index holds another listing of query {query[:12]} "
                    f"than the {listing} it was built from"
                )
        return None


def _whole(listing: str, pages: list[tuple[int, str, int, float | None]]) -> CachedListing | None:
    """The listing of these rows (page, key, last_page, expires) if they are pages 1 to
    ``last_page`` under one ``last_page``, else None."""
    last_pages = {p[2] for p in pages}
    if len(last_pages) != 1:
        return None
    (last_page,) = last_pages
    if {p[0] for p in pages} != set(range(1, last_page + 1)):
        return None
    stamps = [p[3] for p in pages if p[3] is not None]
    return CachedListing(
        listing,
        last_page,
        {p[0]: p[1] for p in pages},
        min(stamps) if len(stamps) == len(pages) else None,
    )
