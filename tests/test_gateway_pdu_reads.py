"""Whole-PDU socket reads: the same bytes as pynetdicom's own reads, over a socket and over an
association."""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.transport import AssociationSocket

from clinassist.serving.gateway.pdu_reads import READ_AHEAD_BYTES, read_whole_pdus
from dicom_fixtures import synthetic_cr
from service_process import free_port

STOCK_RECV = AssociationSocket.recv  # at collection, before any gateway of this process started
assert STOCK_RECV.__module__ == "pynetdicom.transport"


@pytest.fixture
def whole_pdu_reads(monkeypatch):
    """`read_whole_pdus()` for one test; pynetdicom's own reads again after it."""
    monkeypatch.setattr(AssociationSocket, "recv", STOCK_RECV)
    read_whole_pdus()
    assert AssociationSocket.recv is not STOCK_RECV


class _Peer:
    """What `recv` needs of an AssociationSocket: its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


def _sent_in_pieces(payload: bytes, pieces: int, close_after: int | None = None) -> _Peer:
    """The receiving end of a socket pair whose other end writes `payload` (up to
    `close_after` bytes of it) in `pieces` writes with pauses between, so that reads return
    short, then closes."""
    ours, theirs = socket.socketpair()
    sent = np.frombuffer(payload[:close_after], np.uint8)

    def write() -> None:
        for piece in np.array_split(sent, pieces):
            theirs.sendall(piece.tobytes())
            time.sleep(0.005)
        theirs.close()

    threading.Thread(target=write, daemon=True).start()
    return _Peer(ours)


def test_a_pdu_arriving_in_pieces_is_read_whole_and_byte_identical(whole_pdu_reads):
    payload = np.random.default_rng(0).integers(0, 256, 3 << 20, np.uint8).tobytes()
    ours = AssociationSocket.recv(_sent_in_pieces(payload, pieces=7), len(payload))
    stock = STOCK_RECV(_sent_in_pieces(payload, pieces=7), len(payload))
    assert ours == stock == payload
    assert type(ours) is type(stock) is bytearray


def test_a_peer_closing_early_leaves_what_arrived_as_pynetdicom_does(whole_pdu_reads):
    payload = bytes(range(256)) * 400
    ours = AssociationSocket.recv(_sent_in_pieces(payload, 3, close_after=50_001), len(payload))
    stock = STOCK_RECV(_sent_in_pieces(payload, 3, close_after=50_001), len(payload))
    assert ours == stock == payload[:50_001]


def test_a_pdu_declaring_4_gib_allocates_only_what_arrives_before_the_peer_closes(whole_pdu_reads):
    arrived = bytes(range(256)) * 200  # 51,200 bytes of a PDU whose header says 4 GiB - 1
    peer = _sent_in_pieces(arrived, 2)
    tracemalloc.start()
    try:
        ours = AssociationSocket.recv(peer, 0xFFFF_FFFF)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ours == arrived
    assert peak < 2 * READ_AHEAD_BYTES + len(arrived)


def test_an_instance_of_several_pdus_arrives_over_an_association_unchanged(whole_pdu_reads):
    pixels = np.random.default_rng(1).integers(0, 4096, (1200, 1000), np.uint16)
    instance = synthetic_cr(pixels)  # 2.4 MB of pixel data: three 1 MiB PDUs
    received: list[bytes] = []
    scp = AE(ae_title="GATEWAY")
    scp.maximum_pdu_size = 1 << 20
    scp.add_supported_context(instance.SOPClassUID, ExplicitVRLittleEndian)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda event: received.append(event.encoded_dataset()) or 0)])
    try:
        scu = AE(ae_title="PACS")
        scu.add_requested_context(instance.SOPClassUID, ExplicitVRLittleEndian)
        association = scu.associate("127.0.0.1", port, ae_title="GATEWAY", max_pdu=1 << 20)
        assert association.send_c_store(instance).Status == 0
        association.release()
    finally:
        server.shutdown()
    stored = dcmread(BytesIO(received[0]), force=True)
    assert stored.SOPInstanceUID == instance.SOPInstanceUID
    assert stored.PixelData == instance.PixelData
