"""The cache file: pages, the listings they belong to, stored load results, and their writer.

One :class:`CacheFile` owns one SQLite file, the folder of stored loads beside it
(``<file>.loads/``) and one writer thread; nothing else in the library touches them. It is a
thin facade over one part per concern, each module stating the rules it enforces:

- :mod:`.pages`: the **page store**. Page bodies kept by requests-cache, through its public API,
  keyed by :func:`url_key`; only pages that decoded as the documented envelope, never with a
  header that repeats the token.
- :mod:`.listings`: the **listing index** (``mihu_frames_pages``). A load uses cached pages of a
  query only when they are pages 1 to ``last_page`` of one listing, none expired
  (:meth:`CacheFile.listings`); else it fetches the whole query anew.
- :mod:`.loads`: **stored loads** (``mihu_frames_loads`` and one Arrow file each), so that an
  identical reload is one read. A stored load is never older than the pages beside it:
  saving fresh pages of a conversation drops the stored loads holding it in the same
  transaction, and a load is stored only if the listing index still holds exactly the
  listings it was built from. A stored load's file is removed only once the transaction that
  deleted its row committed.
- :mod:`.writer`: the **writer**. Writes come after the frame, on a background thread, in
  order; a load's first reads (:meth:`CacheFile.listings`, :meth:`CacheFile.stored_load`) wait
  for the writes handed before them, by this object or any other client or process on the
  file (an advisory lock on ``<file>.loads/.writing``). :meth:`CacheFile.read_page` does not
  wait: it reads pages of a listing :meth:`CacheFile.listings` returned, and a page that no
  longer belongs to it makes the load fetch that query anew. A write killed half-way is a
  transaction that never happened: the next load fetches those pages again.
- :mod:`.database` and :mod:`.recovery`: the SQLite file. A file another process keeps locked
  longer than the client's ``timeout`` is a :class:`~mihu_frames.errors.CacheLockedError`;
  damaged files are moved aside (``*.damaged-<time>``) and started anew.
- :mod:`.file`: the :class:`CacheFile` facade, where the rules above meet.

**Lifetime.** ``close()`` does not wait (the frame is already in hand): pending writes still
run to the end, then the writer's lock is let go, and the interpreter's exit waits for them.
A closed object opens what it needs again when used: requests-cache's backend on the first
page read, a writer thread on the first write (requests-cache's backend costs milliseconds to
build, so a reload served whole from a stored load never builds one). A child process forked
from one gets fresh locks, writer and connections of its own (``os.register_at_fork``: each
part renews its own); what it inherited belongs to the parent and is never used, closed or
unlocked. Files are 0600, folders 0700 (contacts).
"""

from mihu_frames.cachefile.database import Database
from mihu_frames.cachefile.file import CacheFile, default_cache_path
from mihu_frames.cachefile.listings import CachedListing, ListingIndex
from mihu_frames.cachefile.loads import ORPHAN_AGE, LoadStore
from mihu_frames.cachefile.pages import (
    LISTING_HEADER,
    CachedPage,
    PageStore,
    PageToSave,
    page_key,
    url_key,
)
from mihu_frames.cachefile.writer import Writer

__all__ = [
    "LISTING_HEADER",
    "ORPHAN_AGE",
    "CacheFile",
    "CachedListing",
    "CachedPage",
    "Database",
    "ListingIndex",
    "LoadStore",
    "PageStore",
    "PageToSave",
    "Writer",
    "default_cache_path",
    "page_key",
    "url_key",
]
