"""The job queue: durable, idempotent on SOP Instance UID, retries with backoff, dead letters,
leases that expire."""

import os
import threading
import time

import pytest

from clinassist.serving.gateway.queue import ORPHAN_AGE_S, Backoff, JobQueue, LeaseLost

DEST = "PACS@127.0.0.1:4242"
pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite, then on PostgreSQL


@pytest.fixture
def queue(tmp_path):
    return JobQueue(tmp_path, Backoff(max_attempts=3, first_s=0.0001, max_s=0.0001))


def second_gateway(tmp_path, queue, lease_s=60.0):
    """Another gateway on the same queue, holding leases under its own name."""
    return JobQueue(tmp_path, queue.backoff, lease_s, owner="other-gateway")


def processed_job(queue, uid="1.2.3"):
    job_id, _ = queue.receive(b"DICM", uid, "PACS")
    assert queue.claim_job().id == job_id
    queue.processed(job_id, "result-1", [DEST])
    return job_id


def test_received_instance_is_on_disk_and_queued(queue):
    job_id, new = queue.receive(b"instance bytes", "1.2.3", "PACS")
    assert new and queue.instance_path(job_id).read_bytes() == b"instance bytes"
    assert queue.counts() == {"received": 1}


def test_same_sop_instance_uid_twice_keeps_the_first_job_and_one_file(queue):
    first, _ = queue.receive(b"one", "1.2.3", "PACS")
    second, new = queue.receive(b"two", "1.2.3", "PACS")
    assert (second, new) == (first, False)
    assert [p.name for p in queue.instances.iterdir()] == [f"{first}.dcm"]


def test_a_claimed_job_is_not_handed_out_twice_until_claims_are_released(queue, tmp_path):
    job_id, _ = queue.receive(b"x", "1.2.3", "PACS")
    assert queue.claim_job().id == job_id
    assert queue.claim_job() is None
    reopened = JobQueue(tmp_path, queue.backoff)  # a restarted gateway
    reopened.recover()
    assert reopened.claim_job().id == job_id


def test_a_received_file_is_kept_until_its_job_is_triaged(queue):
    job_id, _ = queue.receive(b"x", "1.2.3", "PACS")
    queue.claim_job()
    queue.processed(job_id, "result-1", [DEST])
    assert not queue.instance_path(job_id).exists()


def test_recover_deletes_only_files_no_job_needs(queue):
    waiting, _ = queue.receive(b"x", "1.2.3", "PACS")
    never_acknowledged = queue.instance_path("0" * 32)  # killed between file and row
    never_acknowledged.write_bytes(b"y")
    long_ago = time.time() - ORPHAN_AGE_S - 1
    os.utime(never_acknowledged, (long_ago, long_ago))
    being_committed = queue.instance_path("1" * 32)  # another gateway's C-STORE, just written
    being_committed.write_bytes(b"z")
    queue.recover()
    assert sorted(p.name for p in queue.instances.iterdir()) == sorted(
        [f"{waiting}.dcm", being_committed.name])


def test_a_lease_that_expires_lets_another_gateway_claim_the_job(queue, tmp_path):
    """A gateway that dies while holding a job leaves it claimed only until its lease ends."""
    dying = JobQueue(tmp_path, queue.backoff, lease_s=0.5)
    job_id, _ = dying.receive(b"x", "1.2.3", "PACS")
    assert dying.claim_job().id == job_id
    other = second_gateway(tmp_path, queue)
    assert other.claim_job() is None  # still leased
    deadline = time.monotonic() + 30
    while (claimed := other.claim_job()) is None:
        assert time.monotonic() < deadline, "the expired lease was never released"
    assert claimed.id == job_id and other.instance_path(job_id).read_bytes() == b"x"
    with pytest.raises(LeaseLost, match="another gateway took over this job"):
        dying.processed(job_id, "late-result", [DEST])  # it woke up too late: dropped
    other.processed(job_id, "result", [DEST])
    assert [(j.state, j.result_id) for j in queue.jobs()] == [("processed", "result")]


def test_renewed_leases_keep_a_slow_step_its_job(queue, tmp_path):
    slow = JobQueue(tmp_path, queue.backoff, lease_s=1.5)
    job_id, _ = slow.receive(b"x", "1.2.3", "PACS")
    stop = threading.Event()
    keeper = threading.Thread(target=slow.keep_leases, args=(stop,))
    keeper.start()
    try:
        assert slow.claim_job().id == job_id
        other = second_gateway(tmp_path, queue)
        ends = time.monotonic() + 3 * slow.lease_s
        while not stop.wait(0.1):  # another gateway's idle workers polling, as they do
            assert other.claim_job() is None
            if time.monotonic() > ends:
                break
        slow.processed(job_id, "result", [])
    finally:
        stop.set()
        keeper.join()
    assert queue.counts() == {"done": 1} and queue.expired_claims() == 0


def test_two_gateways_claiming_at_once_never_get_the_same_job(queue, tmp_path):
    for n in range(20):
        queue.receive(b"x", f"1.2.{n}", "PACS")
    gateways = [queue, second_gateway(tmp_path, queue)]
    claimed: list[list[str]] = [[], []]

    def claim_all(n: int) -> None:
        while (job := gateways[n].claim_job()) is not None:
            claimed[n].append(job.id)
            gateways[n].processed(job.id, "r", [])

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed[0]) + len(claimed[1]) == 20
    assert len(set(claimed[0]) | set(claimed[1])) == 20
    assert queue.counts() == {"done": 20}


def test_backoff_doubles_up_to_its_cap():
    backoff = Backoff(max_attempts=10, first_s=1, max_s=5)
    assert [backoff.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_failed_delivery_waits_for_its_backoff(tmp_path):
    queue = JobQueue(tmp_path, Backoff(max_attempts=3, first_s=60, max_s=60))
    job_id = processed_job(queue)
    delivery = queue.claim_delivery()
    assert (delivery.job_id, delivery.destination, delivery.result_id) == (job_id, DEST, "result-1")
    assert queue.delivery_failed(job_id, DEST, "down") is False
    assert queue.claim_delivery() is None  # not due for 60 s


def test_delivery_dead_lettered_after_max_attempts_then_retried(queue):
    job_id = processed_job(queue)
    outcomes = []
    for _ in range(3):
        delivery = queue.claim_delivery()
        outcomes.append(queue.delivery_failed(delivery.job_id, DEST, "DeliveryError: down"))
    assert outcomes == [False, False, True]
    dead = queue.jobs("dead")
    assert [(j.id, j.attempts, j.last_error) for j in dead] == [(job_id, 3, "DeliveryError: down")]
    assert queue.claim_delivery() is None
    assert queue.retry() == 1
    assert queue.counts() == {"processed": 1}
    assert queue.delivered(job_id, queue.claim_delivery().destination) is True
    assert queue.counts() == {"done": 1}


def test_triage_failures_dead_letter_the_job_and_retry_sends_it_back_to_triage(queue):
    job_id, _ = queue.receive(b"x", "1.2.3", "PACS")
    failures = [queue.job_failed(queue.claim_job().id, "boom") for _ in range(3)]
    assert failures == [False, False, True]
    assert queue.retry(job_id) == 1 and queue.claim_job().id == job_id


def test_retry_of_an_unknown_or_live_job_changes_nothing(queue):
    processed_job(queue)
    assert queue.retry("no-such-job") == 0
    assert queue.counts() == {"processed": 1}


def test_a_job_is_done_only_when_every_destination_has_it(queue):
    job_id, _ = queue.receive(b"x", "1.2.3", "PACS")
    queue.claim_job()
    queue.processed(job_id, "r", [DEST, "OTHER@127.0.0.1:104"])
    assert {queue.claim_delivery().destination for _ in range(2)} == {
        DEST, "OTHER@127.0.0.1:104"}
    assert queue.delivered(job_id, DEST) is False
    assert queue.delivered(job_id, "OTHER@127.0.0.1:104") is True


def test_without_destinations_a_processed_job_is_done(queue):
    job_id, _ = queue.receive(b"x", "1.2.3", "PACS")
    queue.claim_job()
    queue.processed(job_id, "r", [])
    assert queue.counts() == {"done": 1} and queue.claim_delivery() is None


def test_a_rejected_instance_is_final(queue):
    job_id, _ = queue.receive(b"x", "1.2.3", "PACS")
    queue.claim_job()
    queue.rejected(job_id, "multi-frame")
    assert queue.jobs("rejected")[0].last_error == "multi-frame"
    assert queue.claim_job() is None and queue.retry() == 0
