"""Which edges drive a trained graph head's predictions (``notebooks/message_passing.ipynb``): the
head's graph layers as a plain PyG model (:class:`GraphRelationalPart`), PyG's GNNExplainer for one
landmark (:func:`explain_landmark`) and leave-one-edge-out sensitivity (:func:`edge_ablation`).

Conventions: a graph edge ``j -> i`` (``edge_index[0] = j`` the source/neighbour, ``edge_index[1] = i``
the landmark that aggregates it); masks and ablations are in ``edge_index`` order, self-loops included.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from pyg_sdfl.nn.heads import GraphHead, SDFLHead
from pyg_sdfl.nn.model import normalised_to_pixels

__all__ = ["GraphRelationalPart", "explain_landmark", "edge_ablation"]


class GraphRelationalPart(nn.Module):
    """The graph layers of a trained graph head as a plain PyG model, for ``torch_geometric.explain``.

    ``forward(x, edge_index, edge_logits=None)``: node features after map-to-node ``x (|V|, I)``,
    ``edge_index (2, |E|)`` and, for an :class:`~pyg_sdfl.nn.heads.SDFLHead`, the per-edge logits
    ``(|E|,)`` -> landmark coordinates ``(|V|, 2)`` in crop pixels (``(o + 1) S / 2 - 0.5``, as
    :class:`~pyg_sdfl.nn.model.LandmarkModel`). For one face it equals the full model's output
    given that face's map-to-node features and edge logits.

    The layers are the head's own :class:`~pyg_sdfl.nn.graph_stack.GraphStack` (``head.graph_stack``,
    sharing its weights); an SDFL head's logits become ``alpha`` once, with ``head.attention``, as in
    the head's forward. The pixel conversion stays here: it sets the scale of GNNExplainer's loss.
    """

    def __init__(self, head: nn.Module, image_size: int) -> None:
        super().__init__()
        if not isinstance(head, GraphHead):
            raise ValueError(f"{type(head).__name__} is not a graph head (pyg_sdfl.nn.heads.GraphHead)")
        self.head = head
        self.stack = head.graph_stack
        self.image_size = int(image_size)
        self.needs_logits = isinstance(head, SDFLHead)

    def forward(self, x: Tensor, edge_index: Tensor, edge_logits: Optional[Tensor] = None) -> Tensor:
        if self.needs_logits and edge_logits is None:
            raise ValueError("this head weights edges dynamically: pass edge_logits (|E|,)")
        alpha = self.head.attention(edge_logits[None], edge_index) if self.needs_logits else None
        return normalised_to_pixels(self.stack(x, edge_index, alpha), self.image_size)


def explain_landmark(model: nn.Module, image: Tensor, landmark: int, epochs: int = 200, lr: float = 0.01,
                     seed: int = 0, **coeffs: float) -> Tensor:
    """GNNExplainer (regression mode) for one landmark of one face: which edges drive its prediction.

    Runs ``model`` on ``image (3, S, S)`` to get the face's map-to-node features (and edge logits),
    then fits a soft mask over the graph's edges (``edge_index`` order, self-loops included) that
    keeps the prediction of ``landmark`` (squared error in crop pixels) while using as few edges as
    possible (``torch_geometric.explain.algorithm.GNNExplainer`` with ``coeffs``). Returns the mask
    ``(E,)`` in ``[0, 1]``; edges that cannot reach the landmark within the head's layers are 0.
    """
    from torch_geometric.explain import Explainer, GNNExplainer

    if image.dim() != 3:
        raise ValueError(f"image must be one (3, S, S) crop; got {tuple(image.shape)}")
    head = model.head
    n = int(head.num_points)
    if not 0 <= int(landmark) < n:
        raise ValueError(f"landmark {landmark} out of range for {n} points")
    model.eval()
    with torch.no_grad():
        _, extras = model(image.unsqueeze(0), return_intermediates=True)
    part = GraphRelationalPart(head, model.image_size).eval()
    kwargs = {"edge_logits": extras["edge_logits"][0]} if part.needs_logits else {}
    explainer = Explainer(
        model=part, algorithm=GNNExplainer(epochs=int(epochs), lr=float(lr), **coeffs), explanation_type="model",
        node_mask_type=None, edge_mask_type="object",
        model_config=dict(mode="regression", task_level="node", return_type="raw"),
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        explanation = explainer(extras["nodes_map_to_node"][0], head.edge_index, index=int(landmark), **kwargs)
    finally:
        torch.random.set_rng_state(state)
    return explanation.edge_mask.detach()


@torch.no_grad()
def edge_ablation(model: nn.Module, image: Tensor) -> Tensor:
    """Leave-one-edge-out sensitivity of one face: ``(E, N)`` displacement in crop pixels of every
    landmark's prediction when the message along edge ``e`` is removed in every graph layer.

    The message is multiplied by 0 through PyG's explainer masks
    (``torch_geometric.explain.algorithm.utils.set_masks``), exactly as GNNExplainer masks it; the
    other weights are not renormalised. Row ``e`` is ``|f(mask_e) - f(1)|`` per landmark, with ``f``
    the :class:`GraphRelationalPart` of ``model`` on the face's map-to-node features.
    """
    from torch_geometric.explain.algorithm.utils import clear_masks, set_masks

    if image.dim() != 3:
        raise ValueError(f"image must be one (3, S, S) crop; got {tuple(image.shape)}")
    model.eval()
    _, extras = model(image.unsqueeze(0), return_intermediates=True)
    part = GraphRelationalPart(model.head, model.image_size).eval()
    x, edge_index = extras["nodes_map_to_node"][0], model.head.edge_index
    kwargs = {"edge_logits": extras["edge_logits"][0]} if part.needs_logits else {}
    base = part(x, edge_index, **kwargs)
    num_edges = edge_index.shape[1]
    out = torch.empty(num_edges, base.shape[0])
    for e in range(num_edges):
        mask = torch.ones(num_edges, device=x.device)
        mask[e] = 0.0
        set_masks(part, mask, edge_index, apply_sigmoid=False)
        try:
            out[e] = (part(x, edge_index, **kwargs) - base).norm(dim=-1).cpu()
        finally:
            clear_masks(part)
    return out

