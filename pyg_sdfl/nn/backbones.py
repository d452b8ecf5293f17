"""CNN backbones: timm feature extractors cut at stride 32.

Every backbone maps images ``(B, 3, H, W)`` to one feature map ``(B, C, H/32, W/32)``
(``8 x 8`` at the paper's 256 x 256 crops). They are built with timm's
``create_model(name, features_only=True, out_indices=...)``; ``feature_info.channels()`` and
``feature_info.reduction()`` give ``C`` and check the stride.

HRNet is different: its value is the set of parallel multi-resolution branches. We take the four
raw branch outputs (``feature_location=''``; strides 4, 8, 16, 32; for ``hrnet_w18_small``
16, 32, 64 and 128 channels), bring each to the stride-32 size with adaptive average pooling
(parameter-free, an exact box average since the sizes divide), concatenate them and fuse with a
1x1 conv-BN-ReLU to ``fuse_channels`` (default 256). Average pooling keeps the fusion cheap and
leaves all learning to the fusion conv; the branches are HRNet's own representation, not the
channel-expanded ``incre`` modules of its classification head.

No pretrained weights: nothing here downloads anything, and ``pretrained=True`` raises.

A new backbone is one :data:`BACKBONES` entry (``register_backbone``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_sdfl._compat import import_timm

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "MultiResolutionFusion",
    "available_backbones",
    "create_backbone",
    "register_backbone",
]

REDUCTION = 32


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone with timm.

    Attributes:
        timm_name: the timm model name.
        out_indices: indices into timm's ``feature_info`` to return; the last one must be the
            stride-32 map. More than one index means "fuse them" (:class:`MultiResolutionFusion`).
        timm_kwargs: extra keyword arguments for ``timm.create_model``.
        description: one line for listings and docs.
    """

    timm_name: str
    out_indices: Tuple[int, ...]
    timm_kwargs: Dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def fuses(self) -> bool:
        return len(self.out_indices) > 1


BACKBONES: Dict[str, BackboneSpec] = {}


def register_backbone(name: str, spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to :data:`BACKBONES` under ``name``."""
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    BACKBONES[name] = spec
    return spec


def available_backbones() -> Tuple[str, ...]:
    return tuple(sorted(BACKBONES))


register_backbone("resnet18", BackboneSpec("resnet18", (4,), description="ResNet-18, layer4 (512 ch)"))
register_backbone("resnet34", BackboneSpec("resnet34", (4,), description="ResNet-34, layer4 (512 ch)"))
register_backbone(
    "mobilenetv2_100", BackboneSpec("mobilenetv2_100", (4,), description="MobileNetV2 1.0, blocks.6 (320 ch)")
)
register_backbone(
    "mobilenetv2_050", BackboneSpec("mobilenetv2_050", (4,), description="MobileNetV2 0.5, blocks.6 (160 ch)")
)
register_backbone(
    "efficientnet_b0", BackboneSpec("efficientnet_b0", (4,), description="EfficientNet-B0, blocks.6 (320 ch)")
)
register_backbone(
    "efficientnet_b1", BackboneSpec("efficientnet_b1", (4,), description="EfficientNet-B1, blocks.6 (320 ch)")
)
# timm's VGG exposes 6 feature levels (strides 1..32); index 5 is the last max-pool.
register_backbone("vgg16", BackboneSpec("vgg16", (5,), description="VGG-16, last max-pool (512 ch)"))
register_backbone(
    "res2net50_26w_4s",
    BackboneSpec("res2net50_26w_4s", (4,), description="Res2Net-50 26w x 4s, layer4 (2048 ch)"),
)
register_backbone(
    "hrnet_w18_small",
    BackboneSpec(
        "hrnet_w18_small",
        (1, 2, 3, 4),
        timm_kwargs={"feature_location": ""},
        description="HRNet-W18-small, 4 branches pooled to stride 32 and fused (1x1 conv-BN-ReLU)",
    ),
)


class MultiResolutionFusion(nn.Module):
    """Fuse multi-resolution maps at the coarsest one's size.

    ``y = ReLU(BN(Conv1x1(concat_k AdaptiveAvgPool_{h x w}(x_k))))`` where ``(h, w)`` is the
    spatial size of the last (coarsest) input. Inputs: a list of ``(B, C_k, H_k, W_k)``;
    output ``(B, out_channels, h, w)``.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        if out_channels <= 0:
            raise ValueError(f"fuse out_channels must be positive, got {out_channels}")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.out_channels = int(out_channels)
        self.conv = nn.Conv2d(sum(self.in_channels), self.out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(self.out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(features)}")
        size = tuple(features[-1].shape[-2:])
        pooled = [f if tuple(f.shape[-2:]) == size else F.adaptive_avg_pool2d(f, size) for f in features]
        return self.act(self.bn(self.conv(torch.cat(pooled, dim=1))))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"


class Backbone(nn.Module):
    """A feature extractor: images ``(B, in_chans, H, W)`` -> ``(B, out_channels, H/32, W/32)``.

    Attributes:
        name: registry name.
        out_channels: ``C`` of the output map.
        reduction: the output stride, 32.
        in_chans: expected input channels (3).
        body: the timm ``features_only`` network.
        fuse: :class:`MultiResolutionFusion` for multi-branch backbones, else ``None``.

    ``H`` and ``W`` must be multiples of 32. Works with ``channels_last`` tensors and modules.
    """

    def __init__(
        self,
        name: str,
        body: nn.Module,
        channels: Sequence[int],
        reductions: Sequence[int],
        fuse_channels: Optional[int] = None,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        channels, reductions = list(channels), list(reductions)
        if not channels or len(channels) != len(reductions):
            raise ValueError(f"backbone {name!r}: bad feature info channels={channels}, reductions={reductions}")
        if reductions[-1] != REDUCTION:
            raise ValueError(f"backbone {name!r}: last feature map has stride {reductions[-1]}, expected {REDUCTION}")
        self.name = name
        self.body = body
        self.in_chans = int(in_chans)
        self.reduction = REDUCTION
        self.feature_channels: Tuple[int, ...] = tuple(channels)
        self.feature_reductions: Tuple[int, ...] = tuple(reductions)
        if len(channels) > 1:
            self.fuse: Optional[MultiResolutionFusion] = MultiResolutionFusion(channels, fuse_channels or 256)
            self.out_channels = self.fuse.out_channels
        else:
            if fuse_channels is not None:
                raise ValueError(f"backbone {name!r} has a single feature map: fuse_channels does not apply")
            self.fuse = None
            self.out_channels = int(channels[0])

    def output_size(self, image_size: int | Tuple[int, int]) -> Tuple[int, int]:
        """Spatial size ``(H/32, W/32)`` of the output for an input of ``image_size``."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self._check_size(h, w)
        return h // self.reduction, w // self.reduction

    def _check_size(self, h: int, w: int) -> None:
        if h % self.reduction or w % self.reduction or h <= 0 or w <= 0:
            raise ValueError(
                f"backbone {self.name!r}: input size {h}x{w} must be a positive multiple of {self.reduction}"
            )

    def forward(self, images: Tensor) -> Tensor:
        """``(B, in_chans, H, W)`` -> ``(B, out_channels, H/32, W/32)``."""
        if images.dim() != 4 or images.shape[1] != self.in_chans:
            raise ValueError(
                f"backbone {self.name!r}: expected images of shape (B, {self.in_chans}, H, W), "
                f"got {tuple(images.shape)}"
            )
        self._check_size(int(images.shape[2]), int(images.shape[3]))
        features: List[Tensor] = self.body(images)
        if self.fuse is None:
            return features[-1]
        return self.fuse(features)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, out_channels={self.out_channels}, reduction={self.reduction}"


def create_backbone(name: str, pretrained: bool = False, **kwargs: Any) -> Backbone:
    """Build the backbone registered as ``name`` (randomly initialised).

    Args:
        name: a key of :data:`BACKBONES`.
        pretrained: must be False: no weights are ever downloaded (there is no network, and the
            paper trains from scratch). To start from saved weights, load a local state dict.
        **kwargs: ``fuse_channels`` (multi-branch backbones only) and anything else for
            ``timm.create_model`` (e.g. ``drop_path_rate``, ``in_chans``).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(available_backbones())}")
    if pretrained:
        raise ValueError(
            f"pretrained=True for backbone {name!r}: pretrained weights are not available because this "
            "package never downloads anything at run time (these machines have no network). Use "
            "pretrained=False (the paper trains from scratch) or load a local state dict yourself."
        )
    spec = BACKBONES[name]
    fuse_channels = kwargs.pop("fuse_channels", None)
    for reserved in ("features_only", "out_indices", "pretrained_cfg_overlay"):
        if reserved in kwargs:
            raise ValueError(f"create_backbone: {reserved!r} is set by the backbone registry, not by callers")
    timm = import_timm()
    body = timm.create_model(
        spec.timm_name,
        pretrained=False,
        features_only=True,
        out_indices=spec.out_indices,
        **{**spec.timm_kwargs, **kwargs},
    )
    info = body.feature_info
    return Backbone(
        name,
        body,
        channels=info.channels(),
        reductions=info.reduction(),
        fuse_channels=fuse_channels,
        in_chans=int(kwargs.get("in_chans", 3)),
    )
