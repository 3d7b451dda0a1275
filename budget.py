"""How far a training run is, and when it must stop: by its steps, or by the clock (--minutes). A reader
learning the model can skip this file; train.py imports it.

A --minutes budget counts wall time from train.py's start, over every --resume, pictures and checkpoints
included. At each log line the run's clock plus a margin says where it would end if it went on: twice what
the last log interval, picture and checkpoint cost, and one picture more (pictures grow dearer as the GIF
and the loss plot grow, and one can come just before the last step). The first log line where that reaches
the budget is the last step, and its picture and checkpoint follow within it.
"""
import time
from contextlib import contextmanager


class Budget:
    def __init__(self, steps, minutes, warmup, start, seconds_before=0.0):
        self.steps, self.warmup, self.start, self.before = steps, warmup, start, seconds_before
        self.limit = 60 * minutes if minutes else None  # seconds, or None for a run of `steps`
        self.costs = {"picture": 0.0, "checkpoint": 0.0}  # seconds, as last measured
        self.since, self.paused = time.time(), 0.0  # the log interval's start, and its pictures and checkpoints
        self.end, self.done = self.clock(), 0.0  # where the run would end, as the last log line saw it

    def clock(self):
        """The seconds the run has taken, over every resume: what a budget counts, and the log's minutes."""
        return self.before + time.time() - self.start

    @contextmanager
    def timed(self, kind):
        """Time a picture or a checkpoint: the margin's cost of the next one, left out of the steps' seconds."""
        start = time.time()
        yield
        self.costs[kind] = time.time() - start
        self.paused += self.costs[kind]

    def lap(self):
        """The seconds of training steps since the last lap, pictures and checkpoints left out, and where the run
        would end if it went on for one more log interval (the margin above)."""
        seconds = time.time() - self.since - self.paused
        self.since, self.paused = time.time(), 0.0
        return seconds, self.clock() + 2 * (seconds + sum(self.costs.values())) + self.costs["picture"]

    def progress(self, step):
        """How far the run is, 0 to 1, for the learning rate's cosine and the guide: past the warm-up by steps,
        or by the clock (never going back as the margin wobbles)."""
        if self.limit is None:
            return min(1.0, max(0.0, (step - self.warmup) / max(1, self.steps - 1 - self.warmup)))
        self.done = max(self.done, min(1.0, self.end / self.limit))
        return self.done

    def over(self, end):
        """Whether to stop now, given where the run would end (rank 0's, as every rank must agree)."""
        self.end = end
        return self.limit is not None and end >= self.limit
