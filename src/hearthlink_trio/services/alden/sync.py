"""Alden's memory book: what it remembers, and keeping that in step with the Vault.

In ``vault`` mode every exchange is written to the Vault as it happens, and the book is
refreshed from the Vault before it is read, so records written there by others (or
deleted there) are seen. When the Vault cannot be used, Alden switches to
``memory-only`` mode: new exchanges wait in memory, in order, and a background task
(:meth:`MemoryBook.run`) tries the Vault every ``interval`` seconds; once it answers, the
waiting exchanges are written (each under the key chosen when it happened, so a retry
replaces rather than doubles a record) and the mode is ``vault`` again.

Buffered exchanges are held in memory only (plain text never touches Alden's disk); on
shutdown Alden makes one last short attempt to write them.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

import anyio

from hearthlink_trio.services.alden.vault_client import RecordRejected, VaultUnavailable

if TYPE_CHECKING:
    from hearthlink_trio.services.alden.memory import Memory
    from hearthlink_trio.services.alden.vault_client import VaultClient

#: Most memories kept for recall (the newest); older ones stay in the Vault.
MAX_MEMORIES = 1000

log = logging.getLogger("hearthlink.alden")


class MemoryMode(enum.Enum):
    VAULT = "vault"
    MEMORY_ONLY = "memory-only"


class MemoryBook:
    """Alden's memories, with or without a Vault (``vault=None``: memory-only for good)."""

    def __init__(self, vault: VaultClient | None, *, max_memories: int = MAX_MEMORIES) -> None:
        self._vault = vault
        self._max = max_memories
        self._known: dict[str, tuple[Memory, int]] = {}  # in the Vault: memory, version
        self._local: dict[str, Memory] = {}  # kept here only (no Vault, or refused)
        self._pending: dict[str, Memory] = {}  # waiting for the Vault, oldest first
        self.mode = MemoryMode.VAULT if vault is not None else MemoryMode.MEMORY_ONLY
        self._lock = anyio.Lock()  # one Vault conversation at a time
        self._wake = anyio.Event()
        self._last_problem = ""

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def memories(self) -> list[Memory]:
        """Every memory Alden has, oldest first."""
        every = [memory for memory, _ in self._known.values()]
        every += self._local.values()
        every += self._pending.values()
        return sorted(every, key=lambda memory: (memory.ts, memory.key))

    def stored_where(self, key: str) -> str:
        if key in self._known:
            return "vault"
        return "pending" if key in self._pending else "memory"

    # --- reading -----------------------------------------------------------------------

    async def refresh(self) -> None:
        """Bring the book up to date with the Vault when in ``vault`` mode.

        In ``memory-only`` mode nothing is tried here (the background task does it), so
        a request never waits on a Vault that is known to be away.
        """
        if self._vault is None or self.mode is MemoryMode.MEMORY_ONLY:
            return
        async with self._lock:
            try:
                await self._refresh_locked()
            except VaultUnavailable as exc:
                self._went_away(exc)

    async def _refresh_locked(self) -> None:
        assert self._vault is not None
        listings = await self._vault.list()
        listings.sort(key=lambda item: (item.updated_at, item.key))
        newest = listings[-self._max :]
        present = {listing.key for listing in newest}
        for key in [key for key in self._known if key not in present]:
            del self._known[key]
        for listing in newest:
            known = self._known.get(listing.key)
            if known is not None and known[1] == listing.version:
                continue
            memory = await self._vault.get(listing)
            if memory is not None:
                self._known[listing.key] = (memory, listing.version)

    # --- writing -----------------------------------------------------------------------

    async def remember(self, memory: Memory) -> None:
        """Keep ``memory``: in the Vault now if it can be, else buffered for it."""
        if self._vault is None:
            self._local[memory.key] = memory
            self._trim(self._local)
            return
        if self.mode is MemoryMode.MEMORY_ONLY or self._pending:
            # Keep the order: this one waits behind those already buffered.
            self._pending[memory.key] = memory
            self._wake.set()
            return
        async with self._lock:
            try:
                version = await self._vault.put(memory)
            except VaultUnavailable as exc:
                self._pending[memory.key] = memory
                self._went_away(exc)
            except RecordRejected as exc:
                log.warning("%s; the memory is kept in memory only", exc)
                self._local[memory.key] = memory
            else:
                self._known[memory.key] = (memory, version)
                self._trim_known()

    async def sync(self) -> bool:
        """Write the buffered memories to the Vault and refresh; True when in step."""
        if self._vault is None:
            return False
        async with self._lock:
            try:
                await self._vault.ping()
                while self._pending:
                    key, memory = next(iter(self._pending.items()))
                    try:
                        version = await self._vault.put(memory)
                    except RecordRejected as exc:
                        log.warning("%s; the memory is kept in memory only", exc)
                        self._local[key] = memory
                    else:
                        self._known[key] = (memory, version)
                    del self._pending[key]
                await self._refresh_locked()
            except VaultUnavailable as exc:
                self._went_away(exc)
                return False
        self._trim_known()
        if self.mode is MemoryMode.MEMORY_ONLY:
            log.info("the Vault answers again: back in vault mode, buffered memories written")
        self.mode = MemoryMode.VAULT
        self._last_problem = ""
        return True

    def _went_away(self, exc: VaultUnavailable) -> None:
        if self.mode is MemoryMode.VAULT or str(exc) != self._last_problem:
            log.warning("Vault unavailable (%s): memory-only mode", exc)
        self._last_problem = str(exc)
        self.mode = MemoryMode.MEMORY_ONLY
        self._wake.set()

    # --- the background task -----------------------------------------------------------

    async def run(self, interval: float) -> None:
        """Forever: while the Vault is away or memories wait, try it every ``interval``."""
        if self._vault is None:
            return
        # The first round learns the mode and loads the memories already in the Vault.
        await self.sync()
        while True:
            if self.mode is MemoryMode.MEMORY_ONLY or self._pending:
                await anyio.sleep(interval)
                await self.sync()
            else:
                # In step with the Vault: nothing to do until a write fails.
                await self._wake.wait()
                self._wake = anyio.Event()

    async def flush(self, timeout: float) -> None:
        """On shutdown: one last bounded attempt to write what is buffered."""
        if not self._pending:
            return
        with anyio.move_on_after(timeout):
            await self.sync()
        if self._pending:
            log.warning(
                "%d memories could not be written to the Vault and are lost with this process",
                len(self._pending),
            )

    def _trim_known(self) -> None:
        if len(self._known) > self._max:
            newest = sorted(self._known.items(), key=lambda item: (item[1][0].ts, item[0]))
            self._known = dict(newest[-self._max :])

    def _trim(self, memories: dict[str, Memory]) -> None:
        while len(memories) > self._max:
            del memories[next(iter(memories))]
