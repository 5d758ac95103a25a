"""Where objects that warn when dropped unclosed were created: sockets, files, transports,
client sessions and connectors, process pools.

A ResourceWarning carries only the object and the place it was *collected*, which for an
aiohttp session is aiohttp's own `__del__`, and tracemalloc (the built-in answer) costs every
allocation and does not know such objects on 3.11. So the probe notes, when one of these is
made, the first frame of the program's own on the stack (see _util.user_frames), and looks it
up when the warning comes.

Kept by object id with a weak reference, no callback (it would cost a call per object freed):
dead entries are swept out when the table has doubled. The lookup happens inside the object's
finaliser, when a collection of garbage has already cleared weak references to it: an entry
whose object is gone still names it if the id and the type match (an object of that type made
since at that id would have been noted over it).
"""

import sys
import weakref

from . import _util

# Past this many live objects noted at once, new ones go without a site: bounded memory.
LIMIT = 200_000
# Frames kept per site: the program's line and its caller (each costs every file and socket).
DEPTH = 2


class _Ref(weakref.ref):
    __slots__ = ("kind", "site")


class Sites:
    def __init__(self):
        self.live = {}  # id(obj) -> _Ref
        self.sweep_at = 1024
        self.paused = 0

    def close(self):
        self.live.clear()

    def note(self, obj, stop=None, skip=2, depth=DEPTH):
        """Remembers where `obj` is being made: called from its constructor's wrapper (`skip`
        frames up is the constructor's caller); `stop` as in _util.user_frames."""
        live = self.live
        if self.paused:
            self.paused -= 1
            return
        if len(live) >= self.sweep_at:
            self._sweep()
            if len(live) >= LIMIT:
                self.paused = LIMIT // 16  # full of live objects: look again later
                return
        site = _util.user_frames(sys._getframe(skip), depth, stop)
        if not site:
            return
        try:
            ref = _Ref(obj)
        except TypeError:
            return  # not weakly referable: no site
        ref.kind = type(obj)
        ref.site = site
        live[id(obj)] = ref

    def lookup(self, obj):
        """The site noted for `obj` (`file:line in func`, innermost last), or None."""
        if obj is None:
            return None
        ref = self.live.get(id(obj))
        if ref is None:
            return None
        alive = ref()
        if alive is obj or (alive is None and ref.kind is type(obj)):
            return _util.site_lines(ref.site)
        return None

    def _sweep(self):
        live = self.live
        for key, ref in list(live.items()):
            if ref() is None:
                live.pop(key, None)
        self.sweep_at = min(LIMIT, max(1024, 2 * len(live)))
