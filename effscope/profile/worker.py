"""The dedicated measurement process: jobs run in a spawned child, so a crash, an OOM kill or a hang in one target
becomes a failed Record and the run goes on with a fresh child.

The parent (CLI, search sampler) never times anything itself: the sampler never shares a process with timing.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from typing import Any

from effscope.profile.measure import Job
from effscope.profile.record import Record

__all__ = ["Worker"]


def _serve(conn, mem_limit_bytes: int | None) -> None:
    """Child main loop: receive jobs, send back Records as JSON, until told to stop (None)."""
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
        conn.send(run_job(job, first_in_process=jobs_done == 0).to_json())
        jobs_done += 1


class Worker:
    """A measurement process that is started on demand and replaced after it dies or times out.

    Args:
        mem_limit_bytes: optional address-space cap for the child (CPU runs); allocations beyond it fail as
            out-of-memory Records instead of taking the machine down.
    """

    def __init__(self, *, mem_limit_bytes: int | None = None) -> None:
        self._ctx = mp.get_context("spawn")  # no fork: a clean CUDA context and no inherited threads
        self._mem_limit = mem_limit_bytes
        self._proc: Any = None
        self._conn: Any = None
        self._jobs_in_proc = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=_serve, args=(child, self._mem_limit), daemon=True, name="effscope-measure"
        )
        self._proc.start()
        child.close()
        self._conn = parent
        self._jobs_in_proc = 0

    def run(self, job: Job) -> Record:
        """Run `job` in the child; a dead or hung child yields a failed Record naming what happened."""
        if self._proc is not None and job.options.fresh_process and self._jobs_in_proc:
            self.close()
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._jobs_in_proc += 1
        timeout = job.options.timeout_s
        try:
            self._conn.send(job)
            if self._conn.poll(timeout):
                return Record.from_json(self._conn.recv())
            reason = f"timed out after {timeout:g} s (measurement process stopped)"
            self._kill()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            reason = self._death_reason()
        return self._failed(job, reason)

    def _death_reason(self) -> str:
        self._proc.join(5)
        code = self._proc.exitcode
        self._proc = None
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (killed: likely out of memory)" if -code == signal.SIGKILL else ""
            return f"measurement process died with {name}{hint}"
        return f"measurement process exited with code {code}"

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = None

    @staticmethod
    def _failed(job: Job, reason: str) -> Record:
        return Record(
            target=job.target,
            kind="unknown",
            workload=job.workload.as_dict(),
            knobs=dict(job.knobs),
            status="failed",
            error=reason,
            **job.record_fields,
        )

    def close(self) -> None:
        """Stop the child (politely, then firmly)."""
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
        self._proc = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
