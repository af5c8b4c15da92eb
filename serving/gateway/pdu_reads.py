"""Whole-PDU socket reads for pynetdicom.

pynetdicom's `AssociationSocket.recv` reads at most 4,096 bytes per `socket.recv` and grows a
bytearray with each piece: a 1 MiB P-DATA PDU takes 256 calls and as many copies, ~1,800 for a
7.2 MB radiograph. Reading straight into a buffer of the PDU's size returns the same bytes with
one call per segment the kernel holds: a pynetdicom SCP receiving the radiograph on an
association of its own, proposed Orthanc's way (126 presentation contexts), spends about a
fifth less CPU on it (`benchmarks/scp_receive.py`: 30 ms instead of 37, 31 instead of 41).
"""

from __future__ import annotations

from pynetdicom.transport import AssociationSocket


def read_whole_pdus() -> None:
    """Every pynetdicom association socket of this process reads whole PDUs from now on."""
    AssociationSocket.recv = _recv_into  # type: ignore[method-assign]


def _recv_into(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """`nr_bytes` from the socket, or what arrived before the peer closed it (as pynetdicom's
    own `recv`: blocking, its exceptions unchanged)."""
    received = bytearray(nr_bytes)
    nr_read = 0
    with memoryview(received) as free:
        while nr_read < nr_bytes:
            read = self.socket.recv_into(free[nr_read:], nr_bytes - nr_read)  # type: ignore[union-attr]
            if not read:
                break
            nr_read += read
    del received[nr_read:]
    return received
