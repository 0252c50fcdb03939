"""Exponential moving average (EMA) of a network's weights, for the OOF predictions and the
saved model.

After every optimiser step ``average ← d · average + (1 − d) · weights`` over the network's
whole state (parameters and floating-point buffers such as batch-norm statistics; integer
buffers are copied), with ``d = min(decay, (1 + steps) / (10 + steps))`` so the first steps
are not dominated by the random initialisation. A ``decay`` of 0.99 averages over roughly the
last 100 steps.
"""

from __future__ import annotations

import torch


class WeightAverage:
    """The running average of ``model``'s state (a copy, on the model's device)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.steps = float(decay), 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next :meth:`update` applies."""
        return min(self.decay, (1 + self.steps) / (10 + self.steps))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold ``model``'s current state into the average."""
        d = self.current_decay()
        for key, value in model.state_dict().items():
            average = self.state[key]
            if average.dtype.is_floating_point:
                average.mul_(d).add_(value.detach().to(average.dtype), alpha=1.0 - d)
            else:
                average.copy_(value)
        self.steps += 1

    def copy_to(self, model: torch.nn.Module) -> None:
        """Load the average into ``model`` (its tensors keep their memory format)."""
        model.load_state_dict(self.state)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "steps": self.steps, "state": self.state}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.steps = float(state["decay"]), int(state["steps"])
        for key, value in state["state"].items():
            self.state[key].copy_(value)
