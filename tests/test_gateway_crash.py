"""No loss: kill -9 a real `gateway serve` mid-load, restart it, and every acknowledged
instance is triaged and its results delivered exactly once; the log names no patient."""

from __future__ import annotations

import signal

from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

from clinassist.serving.gateway.config import GatewayConfig
from clinassist.serving.gateway.gateway import open_queue
from test_gateway_support import (Destination, GatewayProcess, processes, radiograph,  # noqa: F401
                                  send, wait_for, write_config)

INSTANCES, KILL_AFTER = 24, 10  # kill right after the 11th acknowledgement
SUCCESS = 0x0000


def test_kill_9_mid_load_then_restart_delivers_every_acknowledged_instance_once(
        tmp_path, processes):
    destination = Destination().start()
    try:
        config_path = write_config(tmp_path, destinations=[str(destination)])
        config = GatewayConfig.load(config_path)
        instances = [radiograph(i) for i in range(INSTANCES)]
        for index, ds in enumerate(instances):
            ds.PatientName = f"SECRETNAME{index}"  # one component: highdicom warns with it
        first = GatewayProcess(tmp_path, config.port).start()
        processes.append(first)

        def kill_mid_load(index: int, status: int | None) -> None:
            if index == KILL_AFTER:
                assert first.kill(signal.SIGKILL) == -signal.SIGKILL

        statuses = send(config.port, instances, after_each=kill_mid_load)
        acknowledged = [ds for ds, status in zip(instances, statuses) if status == SUCCESS]
        assert len(acknowledged) == KILL_AFTER + 1 and statuses[-1] is None
        queue = open_queue(tmp_path, config)
        assert len(queue.jobs()) == len(acknowledged)
        assert queue.counts().get("done", 0) < len(acknowledged), "killed too late to test"

        processes.append(GatewayProcess(tmp_path, config.port).start())
        unanswered = [ds for ds in instances if ds not in acknowledged]
        assert send(config.port, unanswered + acknowledged[:3]) == [SUCCESS] * (len(unanswered) + 3)
        wait_for(lambda: queue.counts() == {"done": INSTANCES}, 90, "every job done")

        assert sorted(job.sop_instance_uid for job in queue.jobs()) == sorted(
            str(ds.SOPInstanceUID) for ds in instances)
        by_study = destination.results_by_study()
        assert sorted(by_study) == sorted(str(ds.StudyInstanceUID) for ds in instances)
        for kinds in by_study.values():
            assert {k: len(v) for k, v in kinds.items()} == {Comprehensive3DSRStorage: 1,
                                                             SecondaryCaptureImageStorage: 1}
        assert processes[-1].kill(signal.SIGTERM) == 0
    finally:
        destination.stop()
    log = (tmp_path / "gateway.log").read_text()
    assert log.count("listening on") == 2
    for ds in instances:
        for identifier in (ds.PatientID, str(ds.PatientName), ds.AccessionNumber,
                           ds.SOPInstanceUID, ds.StudyInstanceUID):
            assert identifier not in log
