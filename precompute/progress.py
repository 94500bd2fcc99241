"""Terminal progress bars (tqdm) behind the engine's (task, done, total) callback."""
from __future__ import annotations

import sys

from tqdm import tqdm


class TerminalProgress:
    """One tqdm bar per task; a new task closes the previous bar."""

    UNITS = {"scan images": "img", "train demo model": "step", "train second demo model": "step"}

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr   # looked up now, not at import (pytest's capture replaces it)
        self.bars: dict[str, tqdm] = {}
        self.finished = ""   # the task whose bar closed last

    def __call__(self, task: str, done: int, total: int) -> None:
        bar = self.bars.get(task)
        if bar is None and done >= total and task == self.finished:
            return   # the bar already ended on this report (a chunk's synthesis reached its end)
        if bar is None:
            for other in self.bars.values():
                other.close()
            # neuron bars move in fractions during a chunk's synthesis: show one decimal
            fmt = ("{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
                   if task.endswith("neurons") else None)
            bar = tqdm(total=total, desc=task, unit=self._unit(task), file=self.stream, dynamic_ncols=True,
                       mininterval=0.5, bar_format=fmt)
            self.bars = {task: bar}
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            self.bars.pop(task, None)
            self.finished = task

    def say(self, text: str) -> None:
        """A line of its own above the bars (the build's plan and estimate)."""
        tqdm.write(text, file=self.stream)

    def note(self, task: str, text: str) -> None:
        """Extra state shown after a task's bar (e.g. how many workers are busy)."""
        if task in self.bars:
            self.bars[task].set_postfix_str(text)

    def _unit(self, task: str) -> str:
        if task in self.UNITS:
            return self.UNITS[task]
        return "neuron" if task.endswith("neurons") else "layer" if task.endswith("layers") else "it"

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}
