"""Terminal progress bars (tqdm) behind the engine's (task, done, total) callback."""
from __future__ import annotations

import sys

from tqdm import tqdm


class TerminalProgress:
    """One tqdm bar per task; a new task closes the previous bar."""

    UNITS = {"scan images": "img", "train demo model": "step", "train second demo model": "step"}

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.bars: dict[str, tqdm] = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        bar = self.bars.get(task)
        if bar is None:
            for other in self.bars.values():
                other.close()
            bar = tqdm(total=total, desc=task, unit=self._unit(task), file=self.stream, dynamic_ncols=True,
                       mininterval=0.5)
            self.bars = {task: bar}
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            self.bars.pop(task, None)

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
