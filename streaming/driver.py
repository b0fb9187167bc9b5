"""Driving a session's decodes: how an outcome goes back in, and a session run to its final.

:func:`settle` is the one translation of a decode's outcome (a result; ``None``, a partial
superseded or shed; an exception) into the session's inputs: the transport uses it for each
decode that comes back, and :func:`run_to_final` for a session whose input is all there
(``POST /predict``, the tests' harnesses), so a failure keeps its type the same way on every
path: a :class:`~streaming.errors.StreamingError` (the scheduler's ``Overloaded``) reaches the
client as itself, anything else as ``internal_error``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from streaming.engine import Decoded
from streaming.errors import StreamingError
from streaming.jobs import Job
from streaming.messages import ServerMessage
from streaming.session import Phase, Session

# What a decode came to: its result, None (a partial superseded or shed), or why it failed.
DecodeOutcome = Decoded | None | BaseException
Decode = Callable[[Job], Awaitable[Decoded | None]]


def settle(session: Session, job: Job, outcome: DecodeOutcome, reason: str | None = None) -> None:
    """Give the session what became of ``job``; ``reason`` overrides the failure's text."""
    if isinstance(outcome, BaseException):
        typed = outcome if isinstance(outcome, StreamingError) else None
        session.receive_failure(job.ticket, reason or str(outcome), typed)
    elif outcome is None:
        session.receive_failure(job.ticket, reason or "superseded")
    else:
        session.receive_result(job.ticket, outcome)


async def run_to_final(session: Session, decode: Decode) -> list[ServerMessage]:
    """End the session's input and run every decode it asks for, in order, until it closes.

    Returns every message the session sent from the start; the last one is its ``final``
    (unless the client was gone). A decode that raises fails its job, as in the transport."""
    if session.phase is Phase.OPEN:
        session.end()
    sent: list[ServerMessage] = []
    while True:
        sent += session.messages_to_send()
        jobs = session.jobs_to_start()
        if not jobs or session.phase is Phase.CLOSED:
            return sent
        for job in jobs:
            try:
                outcome: DecodeOutcome = await decode(job)
            except Exception as exc:  # the session turns it into a typed error on the wire
                outcome = exc
            settle(session, job, outcome)
