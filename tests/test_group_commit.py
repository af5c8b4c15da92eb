"""GroupCommit: concurrent items share one write; a failed write fails every item it held."""

from __future__ import annotations

import threading
import time

import pytest

from clinassist.serving.storage.group_commit import GroupCommit


def test_a_failed_write_raises_in_every_thread_whose_item_it_held_and_the_next_one_runs():
    written: list[list[int]] = []
    failing = threading.Event()
    failing.set()

    def write(items: list[int]) -> list[int]:
        time.sleep(0.02)
        if failing.is_set() and 0 in items:
            raise OSError("disk full")
        written.append(items)
        return [item * 10 for item in items]

    commits = GroupCommit(write)
    outcomes: dict[int, object] = {}

    def submit(item: int) -> None:
        try:
            outcomes[item] = commits.submit(item)
        except OSError as error:
            outcomes[item] = error

    threads = [threading.Thread(target=submit, args=(item,)) for item in range(6)]
    for thread in threads:
        thread.start()
        time.sleep(0.001)
    for thread in threads:
        thread.join()
    failed = {item for item, outcome in outcomes.items() if isinstance(outcome, OSError)}
    assert 0 in failed
    assert all(outcomes[item] == item * 10 for item in set(range(6)) - failed)
    assert sorted(item for batch in written for item in batch) == sorted(set(range(6)) - failed)
    failing.clear()
    assert commits.submit(0) == 0  # the failure left no write marked in progress


def test_a_write_returning_fewer_results_than_items_is_an_error():
    with pytest.raises(ValueError):
        GroupCommit(lambda items: []).submit(1)
