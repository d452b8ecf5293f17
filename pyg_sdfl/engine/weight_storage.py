r"""How a shipped weights file stores its tensors: fp16, or int8 weights with one scale per output channel.

``"fp16"`` (the default of :func:`pyg_sdfl.engine.export.export_pretrained`) halves an fp32 state
dict; a value beyond fp16's range stays fp32. ``"int8"`` halves it again for the weight matrices and
convolution kernels: every floating ``*.weight`` tensor of at least two dimensions and
:data:`INT8_MIN_NUMEL` elements is stored, per its first dimension (the output channels of a Conv
or Linear weight), as

.. math::
    q_{o,\ldots} = \operatorname{round}\big(w_{o,\ldots} / s_o\big) \in [-127, 127], \qquad
    s_o = \max_{\ldots} |w_{o,\ldots}| \,/\, 127,

int8 ``q`` of the tensor's shape and fp32 ``s`` of shape ``(O,)`` (``O`` = the tensor's first
dimension, the output channels; ``s_o = 1`` for an all-zero channel), and read back as
:math:`\hat w = s_o\,q` in fp32. The error of an entry is at most :math:`s_o / 2`. Biases,
BatchNorm statistics and other small tensors stay fp16 as in the ``"fp16"`` storage.

The grid is the one a symmetric per-channel int8 quantiser (ONNX Runtime's static quantisation
among them) derives from the read-back weights, so exporting such a file to int8 ONNX does not
round the weights a second time. Measured on the 160 px 300-W model: test/lfpw NME 3.2959% ->
3.2968%, validation 3.5578% -> 3.5581% (README, Train and evaluate; docs/results.md, Speed).

A file with int8 tensors has ``"format": 2`` (:data:`INT8_STORAGE_FORMAT`), so that a pyg_sdfl
that predates this storage refuses it instead of loading the raw integers as weights;
:func:`pyg_sdfl.engine.checkpoint.load_checkpoint` returns its state dict already read back in fp32.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import torch

__all__ = ["STORAGES", "INT8_STORAGE_FORMAT", "INT8_MIN_NUMEL", "quantise_per_channel", "dequantise_per_channel",
           "store_state", "read_stored_state"]

#: the storages :func:`store_state` writes
STORAGES = ("fp16", "int8")
#: the checkpoint format of a file holding int8 tensors (a plain file is format 1)
INT8_STORAGE_FORMAT = 2
#: the smallest tensor stored in int8 (smaller ones stay fp16: their scales would cost more than they save)
INT8_MIN_NUMEL = 1024
_FP16_MAX = float(torch.finfo(torch.float16).max)


def quantise_per_channel(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``weight (O, ...)`` -> ``(q (O, ...) int8, s (O,) fp32)`` with ``q = round(w / s)``, ``s = max|w_o| / 127``."""
    if weight.dim() < 2:
        raise ValueError(f"per-channel int8 needs a tensor of two or more dimensions; got shape {tuple(weight.shape)}")
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(weight.shape), scale


def dequantise_per_channel(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``q (O, ...) int8``, ``s (O,)`` -> ``s_o q`` in fp32, shape of ``q``."""
    if q.dtype != torch.int8 or scale.dim() != 1 or scale.shape[0] != q.shape[0]:
        raise ValueError(f"int8 tensor (O, ...) and (O,) scales expected; got {q.dtype} {tuple(q.shape)} "
                         f"and {tuple(scale.shape)}")
    view = (-1,) + (1,) * (q.dim() - 1)
    return q.float() * scale.float().view(view)


def store_state(state: Mapping[str, Any], storage: str = "fp16") -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], List[str]]:
    """A state dict as a shipped file stores it: ``(stored state, int8 scales by key, keys kept in fp32)``.

    ``storage="fp16"``: floating tensors in fp16 (fp32 where a value exceeds fp16's range), no scales.
    ``storage="int8"``: as fp16, except ``*.weight`` tensors of two or more dimensions and at least
    :data:`INT8_MIN_NUMEL` elements, in int8 with their per-channel scales (module docstring).
    Non-floating tensors (BatchNorm's ``num_batches_tracked``) and non-tensors pass unchanged.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}; got {storage!r}")
    out: Dict[str, Any] = {}
    scales: Dict[str, torch.Tensor] = {}
    kept: List[str] = []
    for key, value in state.items():
        if not (torch.is_tensor(value) and value.is_floating_point()):
            out[key] = value.detach().cpu().clone() if torch.is_tensor(value) else value
            continue
        v = value.detach().cpu()
        if storage == "int8" and key.endswith("weight") and v.dim() >= 2 and v.numel() >= INT8_MIN_NUMEL:
            out[key], scales[key] = quantise_per_channel(v)
        elif v.numel() and float(v.abs().max()) > _FP16_MAX:
            out[key] = v.float().clone()
            kept.append(key)
        else:
            out[key] = v.half().clone()
    return out, scales, kept


def read_stored_state(state: Mapping[str, Any], scales: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """The inverse of :func:`store_state` up to its rounding: int8 entries of ``state`` read back in
    fp32 with their ``scales``; every other entry unchanged. An int8 entry without a scale, or a
    scale without its entry, is a ``ValueError``."""
    orphans = sorted(set(scales) - set(state))
    unscaled = sorted(k for k, v in state.items() if torch.is_tensor(v) and v.dtype == torch.int8 and k not in scales)
    if orphans or unscaled:
        raise ValueError(f"int8 storage is inconsistent: scales without tensors {orphans}, int8 tensors without "
                         f"scales {unscaled}")
    return {k: (dequantise_per_channel(v, scales[k]) if k in scales else v) for k, v in state.items()}
