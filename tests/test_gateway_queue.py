"""The job queue: durable, idempotent on SOP Instance UID, retries with backoff, dead letters."""

import pytest

from clinassist.serving.gateway.queue import Backoff, JobQueue

DEST = "PACS@127.0.0.1:4242"


@pytest.fixture
def queue(tmp_path):
    return JobQueue(tmp_path, Backoff(max_attempts=3, first_s=0.0001, max_s=0.0001))


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
    queue.recover()
    assert [p.name for p in queue.instances.iterdir()] == [f"{waiting}.dcm"]


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
