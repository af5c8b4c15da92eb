"""Whole-PDU socket reads for pynetdicom.

pynetdicom's `AssociationSocket.recv` reads at most 4,096 bytes per `socket.recv` and grows a
bytearray with each piece: a 1 MiB P-DATA PDU takes 256 calls and as many copies, ~1,800 for a
7.2 MB radiograph. Reading straight into a buffer of the PDU's size returns the same bytes with
one call per segment the kernel holds: a pynetdicom SCP receiving the radiograph on an
association of its own, proposed Orthanc's way (126 presentation contexts), spends about a
fifth less CPU on it (`benchmarks/scp_receive.py`, medians: 29.3 ms instead of 36.8, 27.5
instead of 35.0).

The length a PDU's header declares is the peer's word (up to 4 GiB, read before any AE title
is checked), so no more than `READ_AHEAD_BYTES` is allocated beyond what has arrived.
"""

from __future__ import annotations

import socket

from pynetdicom.transport import AssociationSocket

READ_AHEAD_BYTES = 1 << 20  # the gateway's maximum PDU (scp.MAX_PDU_BYTES): one buffer each


def read_whole_pdus() -> None:
    """Every pynetdicom association socket of this process reads whole PDUs from now on."""
    AssociationSocket.recv = _recv_into  # type: ignore[method-assign]


def _recv_into(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """`nr_bytes` from the socket, or what arrived before the peer closed it (as pynetdicom's
    own `recv`: blocking, its exceptions unchanged)."""
    pieces: list[bytearray] = []
    nr_read = 0
    while nr_read < nr_bytes:
        wanted = min(nr_bytes - nr_read, READ_AHEAD_BYTES)
        pieces.append(_read_up_to(self.socket, wanted))  # type: ignore[arg-type]
        nr_read += len(pieces[-1])
        if len(pieces[-1]) < wanted:  # the peer closed the connection
            break
    return pieces[0] if len(pieces) == 1 else bytearray().join(pieces)


def _read_up_to(sock: socket.socket, size: int) -> bytearray:
    """`size` bytes, or fewer if the peer closes first."""
    piece = bytearray(size)
    filled = 0
    with memoryview(piece) as free:
        while filled < size:
            read = sock.recv_into(free[filled:], size - filled)
            if not read:
                break
            filled += read
    del piece[filled:]
    return piece
