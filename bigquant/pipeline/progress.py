"""Terminal progress for the command line: Lloyd's iterations and long passes.

The library itself only logs; these helpers are used by :mod:`bigquant.cli`,
which owns the terminal.

- :class:`LloydProgress` is a :class:`bigquant.KMeans` ``callback``: one line
  updated in place with the iteration, the inertia and the centre shift.
- :class:`TaskProgress` shows how far the current pass has got: on a
  distributed cluster from the events of a scheduler plugin it registers from
  the client (:func:`task_counter`: tasks named ``bq-...``, :mod:`bigquant.tasks`;
  public Dask APIs only, nothing of bigquant
  needed on the scheduler: it works for remote schedulers too), and with dask's
  own :class:`~dask.diagnostics.ProgressBar` on the local threaded scheduler.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from bigquant import tasks

__all__ = ["LloydProgress", "SweepProgress", "TaskProgress", "task_counter", "progress", "Line"]

_BAR = 24


def _bar(fraction: float) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(round(fraction * _BAR))
    return "[" + "#" * filled + " " * (_BAR - filled) + "]"


class Line:
    """One terminal line rewritten in place (TTY) or plain lines (pipes)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = 0
        self.lock = threading.Lock()

    def show(self, text: str) -> None:
        with self.lock:
            if self.tty:
                pad = max(0, self.width - len(text))
                self.stream.write("\r" + text + " " * pad)
                self.width = len(text)
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def end(self) -> None:
        with self.lock:
            if self.tty and self.width:
                self.stream.write("\n")
                self.stream.flush()
            self.width = 0


class LloydProgress:
    """A ``KMeans`` callback drawing Lloyd's progress on one terminal line.

    The bar fills with whichever is further: the iterations against
    ``max_iter``, or the centre shift against the tolerance on a log scale
    (from the first iteration's shift down to ``tol``: each tenfold drop
    fills an equal part).  :class:`bigquant.KMeans` tells the bar its
    absolute tolerance through :meth:`limits` before it iterates.

    Parameters
    ----------
    max_iter : int, default=300
        The estimator's ``max_iter``, for the bar.
    stream : file-like, default=sys.stderr
    every : int or None, default=10
        When the stream is not a terminal, write one line every ``every``
        iterations (a terminal gets every iteration, in place); None: one
        line per run, when it ends (a search that fits many k).
    label : str, default="lloyd"

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> bar = LloydProgress(max_iter=100, stream=out, every=1)
    >>> bar(1, 1234.5, 0.25)
    >>> "iteration   1  inertia 1234.5  centre shift 0.25" in out.getvalue()
    True
    """

    def __init__(self, max_iter: int = 300, *, stream: TextIO | None = None, every: int | None = 10,
                 label: str = "lloyd", line: Line | None = None) -> None:
        self.max_iter = max(1, int(max_iter))
        self.line = line if line is not None else Line(stream)
        self.every = None if every is None else max(1, int(every))
        self.label = label
        self.iterations = 0
        self.runs = 0
        self.tol: float | None = None
        self.first_shift: float | None = None
        self.last: tuple[int, float, float] | None = None

    def limits(self, max_iter: int, tol: float) -> None:
        """The fit's ``max_iter`` and absolute tolerance on the centre shift (called by ``KMeans``)."""
        self.max_iter = max(1, int(max_iter))
        self.tol = float(tol)

    def fraction(self, iteration: int, shift: float) -> float:
        """How full the bar is: iterations against ``max_iter``, or the shift against ``tol`` (log scale)."""
        done = iteration / self.max_iter
        first, tol = self.first_shift, self.tol
        if tol is not None and shift <= tol:
            return 1.0  # converged: Lloyd stops here
        if first is not None and tol is not None and tol > 0 and first > tol:
            done = max(done, math.log(first / shift) / math.log(first / tol))
        return min(max(done, 0.0), 1.0)

    def __call__(self, iteration: int, inertia: float, shift: float) -> None:
        """Record one Lloyd iteration (the ``KMeans`` callback signature)."""
        if self.last is not None and iteration <= self.last[0]:
            self._end_run()  # a new run (n_init > 1, or the next k of a search)
        if self.last is None or iteration <= self.last[0]:
            self.runs += 1
            self.first_shift = None
        if self.first_shift is None and shift > 0:
            self.first_shift = float(shift)
        self.iterations += 1
        self.last = (iteration, inertia, shift)
        if self.line.tty or (self.every is not None and (iteration == 1 or iteration % self.every == 0)):
            self.line.show(self._text(iteration, inertia, shift))

    def _end_run(self) -> None:
        """One run is over: off a terminal with ``every=None``, its one line."""
        if self.every is None and not self.line.tty and self.last is not None:
            self.line.show(self._text(*self.last))
        self.line.end()

    def _text(self, iteration: int, inertia: float, shift: float) -> str:
        return (f"{self.label} {_bar(self.fraction(iteration, shift))} iteration {iteration:>3}"
                f"  inertia {inertia:.6g}  centre shift {shift:.3g}")

    def close(self, inertia: float | None = None) -> None:
        """End the line (and, off a terminal, write the last iteration).

        Parameters
        ----------
        inertia : float or None, default=None
            The fit's result (``model.inertia_``): shown as the last line, so
            the display ends with the figure the result reports. An
            iteration's inertia is that of the centres it started from; the
            result's is that of the final centres, one update later.  The
            bar of that line is full: the fit is over.
        """
        if inertia is not None and self.last is not None:
            self.line.show(f"{self.label} {_bar(1.0)} {self.last[0]:>3} "
                           f"iterations  inertia {inertia:.6g}  (final centres)")
        elif self.last is not None and not self.line.tty and (
                self.every is None or (self.last[0] % self.every and self.last[0] != 1)):
            self.line.show(self._text(*self.last))
        self.line.end()


class SweepProgress:
    """A ``sweep`` callback: how many k values are done, and the last one's cost.

    Parameters
    ----------
    total : int
        Number of k values to fit.
    stream : file-like, default=sys.stderr
    line : Line, default=None
        A terminal line shared with other bars.

    Examples
    --------
    >>> import io
    >>> from bigquant.pipeline.sweep import SweepRow
    >>> out = io.StringIO()
    >>> bar = SweepProgress(4, stream=out)
    >>> bar(SweepRow(8, 1000.0, 990.0, 30.0, 12, 0.5))
    >>> "1/4" in out.getvalue() and "k=8" in out.getvalue()
    True
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, line: Line | None = None) -> None:
        self.total = max(1, int(total))
        self.done = 0
        self.line = line if line is not None else Line(stream)

    def __call__(self, row: Any) -> None:
        """Record one finished k (a :class:`bigquant.sweep.SweepRow`)."""
        self.done += 1
        self.line.show(f"sweep {_bar(self.done / self.total)} {self.done}/{self.total}  k={row.k}: "
                       f"cost {row.cost:.6g}, PSNR {row.psnr:.2f} dB, {row.seconds:.2f} s")

    def close(self) -> None:
        """End the line."""
        self.line.end()


#: task states a task is counted in until it ends (in memory or erred)
_BUSY = ("waiting", "processing", "queued", "no-worker")


def task_counter(topic: str, prefix: str = tasks.PREFIX, interval: float = 0.5) -> Any:
    """A scheduler plugin publishing (finished, total) tasks per task prefix with unfinished work.

    It is registered from the client (:meth:`distributed.Client.register_plugin`)
    and needs nothing of bigquant on the scheduler: its class is made here, in
    a function, so it travels by value (cloudpickle), and it only uses the
    public plugin hook ``transition`` and :meth:`distributed.Scheduler.log_event`.
    At most every ``interval`` seconds it logs ``{prefix name: [finished, total]}``
    under ``topic``, which the client receives with
    :meth:`distributed.Client.subscribe_topic`.

    Parameters
    ----------
    topic : str
        Event topic of the counts.
    prefix : str, default="bq-"
        Only tasks whose name (:func:`dask.utils.key_split`) starts with it.
    interval : float, default=0.5
        Seconds between two messages at most.

    Returns
    -------
    distributed.diagnostics.plugin.SchedulerPlugin
    """
    import asyncio

    from dask.utils import key_split
    from distributed.diagnostics.plugin import SchedulerPlugin

    class TaskCounter(SchedulerPlugin):
        def __init__(self) -> None:
            self.pending: dict[str, set[Any]] = {}
            self.counts: dict[str, list[int]] = {}
            self.scheduler: Any = None
            self.flush_scheduled = False

        async def start(self, scheduler: Any) -> None:
            self.scheduler = scheduler

        def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
            name = key_split(key)
            if not name.startswith(prefix):
                return
            keys = self.pending.get(name)
            if finish in _BUSY:
                if keys is None:
                    keys = self.pending[name] = set()
                    self.counts[name] = [0, 0]
                if key not in keys:
                    keys.add(key)
                    self.counts[name][1] += 1
            elif keys is not None and key in keys:
                keys.discard(key)
                if finish in ("memory", "erred"):
                    self.counts[name][0] += 1
                else:  # released or forgotten unfinished: cancelled
                    self.counts[name][1] -= 1
                if not keys:
                    del self.pending[name], self.counts[name]
            else:
                return
            if not self.flush_scheduled:
                self.flush_scheduled = True
                try:
                    asyncio.get_running_loop().call_later(interval, self.flush)
                except RuntimeError:  # not on the event loop: send at once
                    self.flush()

        def flush(self) -> None:
            self.flush_scheduled = False
            if self.scheduler is not None:
                self.scheduler.log_event(topic, {n: list(c) for n, c in self.counts.items()})

    return TaskCounter()


class TaskProgress:
    """Progress of the running pass, drawn on a terminal line.

    With a distributed ``client``, a :func:`task_counter` plugin registered on
    the scheduler from the client sends the counts of tasks per prefix as
    events (public APIs only; bigquant need not be installed on the
    scheduler); without one, dask's local
    :class:`~dask.diagnostics.ProgressBar` is used. Off a terminal it draws
    nothing (logs stay clean).

    Parameters
    ----------
    client : distributed.Client or None
    stream : file-like, default=sys.stderr
    interval : float, default=0.5
        Seconds between two updates at most.
    exclude : tuple of str, default=("bq-lloyd",)
        Task prefixes not shown (Lloyd's iterations have :class:`LloydProgress`).

    Attributes
    ----------
    updates : int
        Messages received from the scheduler.
    """

    def __init__(self, client: Any = None, *, stream: TextIO | None = None, interval: float = 0.5,
                 exclude: tuple[str, ...] = (tasks.LLOYD,), line: Line | None = None,
                 prefix: str = tasks.PREFIX) -> None:
        self.client = client
        self.exclude = exclude
        self.prefix = prefix
        self.line = line if line is not None else Line(stream)
        self.interval = float(interval)
        self._name: str | None = None
        self._shown = False
        self._local: contextlib.ExitStack | None = None
        self.updates = 0

    def _on_event(self, event: tuple[float, Any]) -> None:
        """Draw one message of the scheduler plugin: ``{prefix name: [finished, total]}``."""
        self.updates += 1
        counts = {n: c for n, c in dict(event[1]).items() if not n.startswith(self.exclude)}
        if not counts:
            return
        done = sum(int(c[0]) for c in counts.values())
        total = sum(int(c[1]) for c in counts.values())
        names = ", ".join(sorted(n.removeprefix(self.prefix) for n in counts))
        self.line.show(f"tasks {_bar(done / max(total, 1))} {done}/{total}  {names}")
        self._shown = True

    def start(self) -> TaskProgress:
        """Start drawing."""
        if not self.line.tty:
            return self
        if self.client is not None:
            import uuid

            name = f"bigquant-progress-{uuid.uuid4().hex[:12]}"
            self.client.subscribe_topic(name, self._on_event)
            try:
                self.client.register_plugin(task_counter(name, self.prefix, self.interval), name=name)
            except Exception:  # noqa: BLE001 - progress is optional: the job runs without it
                self.client.unsubscribe_topic(name)
                return self
            self._name = name
        else:
            from dask.diagnostics import ProgressBar

            self._local = contextlib.ExitStack()
            self._local.enter_context(ProgressBar(minimum=1.0, out=self.line.stream))
        return self

    def stop(self) -> None:
        """Stop drawing (idempotent)."""
        if self._name is not None:
            name, self._name = self._name, None
            with contextlib.suppress(Exception):  # the client may have closed under us
                self.client.unregister_scheduler_plugin(name)
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(name)
            if self._shown:
                self.line.end()
        if self._local is not None:
            self._local.close()
            self._local = None

    def __enter__(self) -> TaskProgress:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def progress(client: Any = None, *, enabled: bool = True, stream: TextIO | None = None,
             line: Line | None = None) -> Iterator[TaskProgress | None]:
    """``with progress(client):`` draws :class:`TaskProgress` when ``enabled``."""
    if not enabled:
        yield None
        return
    bar = TaskProgress(client, stream=stream, line=line).start()
    try:
        yield bar
    finally:
        bar.stop()
        time.sleep(0)
