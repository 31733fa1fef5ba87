"""``nclab cache [--json]`` and ``nclab cache clear AREA ... | --all``: what nclab's cache folder
holds (decoded datasets, extracted archives, the glyphs, the features of runs), and removing it."""

from __future__ import annotations

import json
import time

from nclab.data.cache import CacheArea, cache_areas, cache_dir, clear_cache
from nclab.errors import NclabError


def human_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def format_areas(areas: list[CacheArea]) -> str:
    head = f"{cache_dir()}: {human_bytes(sum(a.bytes for a in areas))} in {len(areas)} area(s)"
    if not areas:
        return head
    w = max(len(a.name) for a in areas)
    rows = [f"  {'area':<{w}}  {'entries':>7}  {'on disk':>10}  last used"]
    rows += [f"  {a.name:<{w}}  {a.entries:>7}  {human_bytes(a.bytes):>10}  {_when(a.last_used)}" for a in areas]
    return "\n".join([head, *rows])


def _as_dict(a: CacheArea) -> dict:
    return {"name": a.name, "path": str(a.path), "entries": a.entries, "bytes": a.bytes, "last_used": a.last_used}


def cache_command(args) -> int:
    if args.cache_command == "clear":
        if bool(args.areas) == bool(args.all):
            raise NclabError("nclab cache clear: name the areas to remove (see `nclab cache`) or give --all")
        removed = clear_cache(None if args.all else args.areas)
        if args.json:
            print(json.dumps({"cache_dir": str(cache_dir()), "removed": [_as_dict(a) for a in removed]}, indent=2))
            return 0
        for a in removed:
            print(f"removed {a.name} ({a.entries} entries, {human_bytes(a.bytes)})")
        if not removed:
            print(f"{cache_dir()}: nothing to remove")
        return 0
    if args.areas or args.all:
        raise NclabError("nclab cache: areas and --all go with `nclab cache clear`")
    areas = cache_areas()
    if args.json:
        print(json.dumps({"cache_dir": str(cache_dir()), "areas": [_as_dict(a) for a in areas]}, indent=2))
    else:
        print(format_areas(areas))
    return 0
