"""Group commit: rows that threads of one process hand in at the same time go into the database
in one transaction, so N concurrent writers pay for one commit instead of N.

Each `submit` still returns only once the transaction holding its own row has committed (or
raises what that transaction raised), so a caller that has its answer knows its row is durable,
exactly as with a transaction of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Written = TypeVar("Written")


class _Ticket(Generic[Item, Written]):
    def __init__(self, item: Item) -> None:
        self.item = item
        self.finished = False
        self.written: Written | None = None
        self.error: BaseException | None = None

    def outcome(self) -> Written:
        if self.error is not None:
            raise self.error
        assert self.written is not None
        return self.written


class GroupCommit(Generic[Item, Written]):
    """`write(items)` stores every item in one transaction and returns what it wrote for each,
    in order. The first thread to find no write in progress writes every item waiting (its own
    included); items handed in meanwhile wait for the next write, done by one of their
    threads."""

    def __init__(self, write: Callable[[list[Item]], Sequence[Written]]) -> None:
        self._write = write
        self._changed = threading.Condition()
        self._waiting: list[_Ticket[Item, Written]] = []
        self._writing = False

    def submit(self, item: Item) -> Written:
        ticket: _Ticket[Item, Written] = _Ticket(item)
        with self._changed:
            self._waiting.append(ticket)
            while self._writing and not ticket.finished:
                self._changed.wait()
            if ticket.finished:
                return ticket.outcome()
            batch, self._waiting = self._waiting, []
            self._writing = True
        try:
            for each, written in zip(batch, self._write([each.item for each in batch]),
                                     strict=True):
                each.written = written
        except BaseException as error:  # the batch's transaction failed, or `write` broke its
            # contract: no item of the batch is known to be written
            for each in batch:
                each.error = error
        finally:
            with self._changed:
                for each in batch:
                    each.finished = True
                self._writing = False
                self._changed.notify_all()
        return ticket.outcome()
