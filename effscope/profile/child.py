"""A spawned child process that answers one request at a time: started on demand, replaced when it dies or hangs.

The measurement worker and the search's quality process are both built on it, so a crash, an OOM kill or a hang
in the work becomes a reason in the parent instead of a dead run.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

__all__ = ["ChildDied", "ChildProcess", "ChildTimedOut", "start_shielded"]


_SHIELDED = (signal.SIGINT, signal.SIGTERM)  # signals the parent defers while it starts a child


def start_shielded(proc: BaseProcess) -> None:
    """Start a spawned process with SIGINT blocked: a Ctrl-C that reaches it stays pending instead of interrupting it.

    A terminal's Ctrl-C goes to the whole foreground process group; a child still importing its modules would die
    with a KeyboardInterrupt traceback. The parent handles Ctrl-C and stops its children itself. A child that
    should react to SIGINT later (a search worker, once in its own session) unblocks it and then receives any
    SIGINT that arrived meanwhile. The parent blocks it only while starting the child (the mask is inherited), so
    its own Ctrl-C is delayed, never lost.

    Blocking covers this thread only: the kernel may hand the signal to another thread of the parent (torch's
    worker threads), and Python would then raise KeyboardInterrupt in the middle of `proc.start()`, between
    launching the child and sending it what it must unpickle first (the child dies with "Ran out of input"). So the
    parent's SIGINT handler, too, only records the signal until the child is started, and it is raised afterwards.
    """
    import threading
    from multiprocessing import resource_tracker

    # Spawning starts multiprocessing's resource tracker once, and its start unblocks SIGINT: start it first.
    resource_tracker.ensure_running()
    main = threading.current_thread() is threading.main_thread()  # signal handlers can only be set there
    came: list[int] = []
    # SIGTERM too, where the command turns it into an interrupt (`timeout`, a CI cancel). A handler installed
    # outside Python reads as None: that signal is then only blocked, as before.
    handlers = {s: signal.getsignal(s) if main else None for s in _SHIELDED}
    for signum, handler in handlers.items():
        if callable(handler):
            signal.signal(signum, lambda n, _frame: came.append(n))
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        proc.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for signum, handler in handlers.items():
            if callable(handler):
                signal.signal(signum, handler)
        for signum in dict.fromkeys(came):
            signal.raise_signal(signum)  # now handled as it would have been


class ChildDied(Exception):
    """The child exited or was killed while answering; the message names how."""


class ChildTimedOut(Exception):
    """The child did not answer in time and was stopped."""


class ChildProcess:
    """A spawned process running `serve(conn, *args)`, which answers each request received on `conn`.

    Args:
        serve: the child's main loop; it returns when it receives None.
        args: extra arguments for `serve` (picklable).
        what: how messages name the process ("measurement process").
    """

    def __init__(self, serve: Callable[..., None], args: tuple[Any, ...], what: str) -> None:
        self._ctx = mp.get_context("spawn")  # no fork: a clean CUDA context and no inherited threads
        self._serve, self._args, self.what = serve, args, what
        self._proc: Any = None
        self._conn: Any = None
        self.requests = 0  # requests sent to the current process
        self._awaiting = False  # a request was sent and its reply not yet received

    def start(self) -> None:
        """Start the process now unless it runs (it imports its modules while the caller goes on)."""
        if self._proc is None or not self._proc.is_alive():
            self._start()

    def request(self, payload: Any, timeout: float) -> Any:
        """Send `payload` and return the reply.

        Raises:
            ChildTimedOut: no reply within `timeout` seconds (the process is killed).
            ChildDied: the process ended before replying.
        """
        self.send(payload)
        return self.receive(timeout)

    def send(self, payload: Any) -> None:
        """Send `payload` without waiting for the reply (`receive` gets it), so the caller can work meanwhile.

        Raises:
            ChildDied: the process ended before the payload could be sent.
        """
        self.start()
        self.requests += 1
        try:
            self._conn.send(payload)
        except (BrokenPipeError, ConnectionResetError):
            raise ChildDied(self._death_reason()) from None
        self._awaiting = True

    def receive(self, timeout: float) -> Any:
        """The reply to the payload sent last.

        Raises:
            ChildTimedOut: no reply within `timeout` seconds (the process is killed).
            ChildDied: the process ended before replying.
        """
        try:
            if not self._conn.poll(timeout):
                self._kill()
                raise ChildTimedOut(f"timed out after {timeout:g} s ({self.what} stopped)")
            reply = self._conn.recv()
            self._awaiting = False
            return reply
        except (EOFError, BrokenPipeError, ConnectionResetError):
            raise ChildDied(self._death_reason()) from None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=self._serve, args=(child, *self._args), daemon=True, name=f"effscope-{self.what.split()[0]}"
        )
        start_shielded(self._proc)
        child.close()
        self._conn = parent
        self.requests = 0
        self._awaiting = False

    def _death_reason(self) -> str:
        self._proc.join(5)
        code = self._proc.exitcode
        self._proc = None
        if code is not None and code < 0:
            hint = " (killed: likely out of memory)" if -code == signal.SIGKILL else ""
            return f"{self.what} died with {signal.Signals(-code).name}{hint}"
        return f"{self.what} exited with code {code}"

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        self._proc = None

    def close(self) -> None:
        """Stop the process: politely when idle, at once while it works on a request (after Ctrl-C, say), which it
        would finish before reading the request to stop."""
        if self._proc is not None and self._proc.is_alive():
            if not self._awaiting:
                try:
                    self._conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
                self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
        self._proc = None
