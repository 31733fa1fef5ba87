"""An exponential moving average of the weights (``train.ema``): the network a run delivers.

After every optimiser step the averaged copy moves towards the live network,
``avg <- d_t * avg + (1 - d_t) * live`` over every floating-point parameter and buffer (so
batch-norm statistics are averaged with the weights they belong to); integer buffers
(``num_batches_tracked``) are copied. ``d_t = min(decay, (1 + t) / (10 + t))`` after the t-th step
is the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=t)``: early on the average
forgets the random initial weights quickly, later it spans about ``1 / (1 - decay)`` steps.

``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn`` computes the same
recursion without the warm-up; with it, the decay would have to be read from its on-device
counter at every step (a host-device sync on a GPU). Here the loop passes the step it already
counts. The update is one fused ``torch._foreach_lerp_`` per device and dtype.
"""

from __future__ import annotations

import copy

import torch


def ema_decay(decay: float, step: int) -> float:
    """The decay applied at the ``step``-th update (1-based)."""
    return min(decay, (1 + step) / (10 + step))


class WeightAverage:
    """The averaged copy (``.module``, eval mode, no gradients) of the live network ``model``, on its
    device; in float32 when ``model`` is in half precision (``trainer.precision=bf16-true``), where
    a step of ``1 - decay`` would be lost to rounding. The tensors of the two networks are paired
    once: ``model``'s parameters and buffers must stay the same objects (in-place updates and
    ``load_state_dict`` keep them)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        if any(p.dtype in (torch.float16, torch.bfloat16) for p in self.module.parameters()):
            self.module.float()
        pairs = list(zip([*self.module.parameters(), *self.module.buffers()],
                         [*model.parameters(), *model.buffers()], strict=True))
        self._avg = [a for a, _ in pairs if a.is_floating_point()]
        self._live = [p.detach() for a, p in pairs if a.is_floating_point()]
        self._cast = any(a.dtype != p.dtype for a, p in zip(self._avg, self._live))
        self._copied = [(a, p) for a, p in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the live network's weights after its ``step``-th optimiser step."""
        for a, p in self._copied:
            a.copy_(p)
        if self._avg:
            live = [p.to(a.dtype) for a, p in zip(self._avg, self._live)] if self._cast else self._live
            torch._foreach_lerp_(self._avg, live, 1.0 - ema_decay(self.decay, step))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
