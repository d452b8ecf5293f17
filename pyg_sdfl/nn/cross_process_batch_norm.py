"""Batch normalisation over the global batch of a multi-process run, on any device.

``torch.nn.SyncBatchNorm`` refuses CPU tensors (it needs CUDA/XPU), so a DDP run on gloo would
normalise each process's shard with its own statistics and train a different model than one
process on the same global batch. :class:`CrossProcessBatchNorm` sums the statistics over the
process group instead, with a differentiable all-reduce, so its forward, backward and running
statistics are those of an ordinary batch norm over the concatenation of all processes' inputs:

    n = sum_r n_r,    mu = (1/n) sum_r sum_{i in r} x_i,    var = (1/n) sum_r sum_{i in r} (x_i - mu)^2
    y_i = gamma (x_i - mu) / sqrt(var + eps) + beta
    running_mean <- (1 - m) running_mean + m mu,   running_var <- (1 - m) running_var + m var n / (n - 1)

(per channel; channel dimension 1 of a ``(B, C)``, ``(B, C, L)`` or ``(B, C, H, W)`` input). Two
all-reduces per call (the mean first, then the centred squares: the two-pass variance, exact
to rounding). Outside training, or without a process group of more than one process, it is
exactly ``torch.nn.BatchNorm*``. Its parameters and buffers have the names of ``BatchNorm*``, so
checkpoints load either way. :func:`convert_batch_norm` swaps it in (``train.sync_batchnorm``);
on CUDA it uses ``torch.nn.SyncBatchNorm``, which computes the same thing with fused kernels.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["CrossProcessBatchNorm", "convert_batch_norm", "summed_over_processes"]


def _group_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _SumOverProcesses(torch.autograd.Function):
    """``y = sum_r x_r`` on every rank; backward ``dL/dx_r = sum_r' dL_r'/dy`` (the gradient of the
    sum of all ranks' losses, which DDP then averages like any other gradient)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def summed_over_processes(x: Tensor) -> Tensor:
    """The element-wise sum of ``x`` over the process group, differentiable (see :class:`_SumOverProcesses`)."""
    return _SumOverProcesses.apply(x)


class CrossProcessBatchNorm(_BatchNorm):
    """Batch norm whose training statistics cover every process's batch (module docstring).

    Args: as ``torch.nn.BatchNorm2d`` (``num_features`` = C, ``eps``, ``momentum``, ``affine``,
    ``track_running_stats``). Input ``(B, C)``, ``(B, C, L)`` or ``(B, C, H, W)``; output the same shape
    and dtype (statistics in float32).
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3, 4):
            raise ValueError(f"expected a 2D, 3D or 4D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and _group_size() > 1):
            return super().forward(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        x = input.float()
        count = torch.full((1,), x.numel() / max(channels, 1), dtype=torch.float32, device=x.device)
        totals = summed_over_processes(torch.cat([x.sum(dims), count]))
        n = totals[-1].detach()
        if float(n) < 2:
            raise ValueError(f"expected more than 1 value per channel when training over all processes, got {int(n)}")
        mean = totals[:-1] / n
        centred = x - mean.view(shape)
        var = summed_over_processes((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                unbiased = var.detach() * (n / (n - 1))
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return y.to(input.dtype)


def convert_batch_norm(module: nn.Module, device_type: str = "cpu") -> nn.Module:
    """Every ``BatchNorm1d/2d/3d`` in ``module`` made to normalise over the global batch.

    ``device_type="cuda"``: ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``; otherwise each
    batch norm becomes a :class:`CrossProcessBatchNorm` with the same settings, parameters, buffers
    and ``requires_grad`` flags. Returns the converted module (``module`` itself when it has children
    to convert in place, a new module when ``module`` is itself a batch norm).
    """
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, _BatchNorm) and not isinstance(module, (CrossProcessBatchNorm, nn.SyncBatchNorm)):
        out = CrossProcessBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        out = out.to(device=next(iter(module.state_dict().values()), torch.empty(0)).device)
        out.load_state_dict(module.state_dict())
        if module.affine:
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
        out.train(module.training)
        return out
    for name, child in module.named_children():
        converted = convert_batch_norm(child, device_type)
        if converted is not child:
            module.add_module(name, converted)
    return module
