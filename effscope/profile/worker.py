"""The dedicated measurement process: jobs run in a spawned child, so a crash, an OOM kill or a hang in one target
becomes a failed Record and the run goes on with a fresh child.

The parent (CLI, search sampler) never times anything itself: the sampler never shares a process with timing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effscope.profile.child import ChildDied, ChildProcess, ChildTimedOut
from effscope.profile.measure import Job
from effscope.profile.record import Record

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["InProcess", "Worker"]


def _serve(conn: Connection, mem_limit_bytes: int | None) -> None:
    """Child main loop: receive jobs, send back Records as JSON, until told to stop (None)."""
    from effscope.profile.env import retain_freed_heap

    retain_freed_heap()  # before any tensor exists: freed activations stay mapped from one forward to the next
    if mem_limit_bytes:
        import resource

        # Cap the address space so exhausting memory raises in the child instead of summoning the OOM killer.
        resource.setrlimit(resource.RLIMIT_AS, (mem_limit_bytes, mem_limit_bytes))
    from effscope.profile.measure import run_job

    jobs_done = 0
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        record = run_job(job, first_in_process=jobs_done == 0).to_json()
        try:
            conn.send(record)
        except (BrokenPipeError, ConnectionResetError):
            return  # the process that asked is gone (killed): nobody is left to read the Record or a traceback
        jobs_done += 1


class Worker:
    """A measurement process that is started on demand and replaced after it dies or times out.

    Args:
        mem_limit_bytes: optional address-space cap for the child (CPU runs); allocations beyond it fail as
            out-of-memory Records instead of taking the machine down.
    """

    def __init__(self, *, mem_limit_bytes: int | None = None) -> None:
        self._child = ChildProcess(_serve, (mem_limit_bytes,), "measurement process")
        self._lost: ChildDied | None = None

    def start(self) -> None:
        """Start the measurement process ahead of the first job."""
        self._child.start()

    def run(self, job: Job) -> Record:
        """Run `job` in the child; a dead or hung child yields a failed Record naming what happened."""
        self.submit(job)
        return self.result(job)

    def submit(self, job: Job) -> None:
        """Start `job` in the child and return at once, so the caller can work while it runs; `result` waits for its
        Record."""
        if job.options.fresh_process and self._child.requests:
            self._child.close()
        try:
            self._child.send(job)
        except ChildDied as e:
            self._lost = e  # the child died before taking the job: `result` reports it
        else:
            self._lost = None

    def result(self, job: Job) -> Record:
        """The Record of the job submitted last; a dead or hung child yields a failed Record naming what happened."""
        try:
            if self._lost is not None:
                raise self._lost
            return Record.from_json(self._child.receive(job.options.timeout_s))
        except (ChildTimedOut, ChildDied) as e:
            from effscope.profile.env import host_environment
            from effscope.profile.measure import describe_protocol

            return Record(
                target=job.target,
                kind="unknown",
                workload=job.workload.as_dict(),
                knobs=dict(job.knobs),
                # the child recorded nothing: say at least which host and software it failed on, read here in the
                # parent without touching CUDA
                env=host_environment(job.workload.device),
                status="failed",
                error=str(e),
                protocol=describe_protocol(job.options),  # how it was to be timed, as a measured Record says
                **job.record_fields,
            )

    def close(self) -> None:
        """Stop the child."""
        self._child.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcess:
    """Runs jobs in the calling process, as a Worker would in its child: no isolation from a crash or a hang, and no
    honest CPU peak memory, but no process start and no pickling (effscope.profile(..., isolate=False))."""

    def run(self, job: Job) -> Record:
        from effscope.profile.measure import run_job

        record = run_job(job, first_in_process=False)
        if "peak_rss_bytes" in record.missing:
            record.missing["peak_rss_bytes"] = (
                "measured in the calling process (isolate=False), where memory held by earlier work hides this job's "
                "peak"
            )
        return record

    def close(self) -> None:
        """Nothing to stop."""
