"""CrossProcessBatchNorm over 2 gloo processes against one torch BatchNorm over the whole batch."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pyg_sdfl.nn.cross_process_batch_norm import CrossProcessBatchNorm, convert_batch_norm

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(shape):
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(shape, generator=g)  # an offset mean: a one-pass variance would lose digits
    upstream = torch.randn(shape, generator=g)  # d loss / d y
    return x, upstream


def _reference(shape):
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(shape[1]) if len(shape) == 4 else nn.BatchNorm1d(shape[1])
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    x, upstream = _inputs(shape)
    x.requires_grad_(True)
    for _ in range(2):  # two steps: running statistics after momentum updates
        x.grad = None
        bn.zero_grad()
        (bn(x) * upstream).sum().backward()
    return bn(x.detach()).detach(), x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var, bn


def _worker(rank, port, shape, queue):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    ref_bn = _reference(shape)[-1]
    torch.manual_seed(1)
    plain = nn.BatchNorm2d(shape[1]) if len(shape) == 4 else nn.BatchNorm1d(shape[1])
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    bn = convert_batch_norm(nn.Sequential(plain))[0]
    assert isinstance(bn, CrossProcessBatchNorm)
    x, upstream = _inputs(shape)
    part = slice(rank * shape[0] // WORLD, (rank + 1) * shape[0] // WORLD)
    xs = x[part].clone().requires_grad_(True)
    for _ in range(2):
        xs.grad = None
        bn.zero_grad()
        (bn(xs) * upstream[part]).sum().backward()
    for p in (bn.weight, bn.bias):  # the losses here are sums: the whole batch's gradient is the ranks' sum
        # (DDP averages, for the per-rank mean losses training uses)
        dist.all_reduce(p.grad)
    bn.train()
    y = bn(xs.detach()).detach()
    arrays = [t.detach().numpy().copy() for t in (y, xs.grad, bn.weight.grad, bn.bias.grad, bn.running_mean,
                                                  bn.running_var)]  # by value: the queue outlives the process
    queue.put((rank, *arrays, int(bn.num_batches_tracked), int(ref_bn.num_batches_tracked)))
    dist.destroy_process_group()


@pytest.mark.parametrize("shape", [(8, 3, 4, 5), (12, 6)])
def test_two_processes_equal_one_batch_norm_over_the_whole_batch(shape):
    y_ref, gx_ref, gw_ref, gb_ref, mean_ref, var_ref, _ = _reference(shape)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_worker, args=(_free_port(), shape, queue), nprocs=WORLD, start_method="spawn")
    results = sorted((queue.get(timeout=60) for _ in range(WORLD)), key=lambda r: r[0])
    results = [(r[0], *(torch.from_numpy(a) for a in r[1:7]), *r[7:]) for r in results]
    y = torch.cat([r[1] for r in results])
    gx = torch.cat([r[2] for r in results])
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
    for r in results:
        # the gradients of the affine parameters: each rank's share, summed over the ranks
        torch.testing.assert_close(r[3], gw_ref, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(r[4], gb_ref, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(r[5], mean_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r[6], var_ref, atol=1e-5, rtol=1e-5)
        assert r[7] == r[8] == 3  # two steps and the last forward, all in training mode


def test_without_a_process_group_it_is_a_plain_batch_norm():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(4)
    ours = convert_batch_norm(nn.Sequential(nn.BatchNorm2d(4)))[0]
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(6, 4, 3, 3)
    torch.testing.assert_close(ours(x), plain(x))
    torch.testing.assert_close(ours.running_var, plain.running_var)
    ours.eval(), plain.eval()
    torch.testing.assert_close(ours(x), plain(x))


def test_conversion_keeps_names_values_and_flags():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5)))
    net[1].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.eval()
    converted = convert_batch_norm(net)
    assert isinstance(converted[1], CrossProcessBatchNorm) and isinstance(converted[2][1], CrossProcessBatchNorm)
    assert not converted[1].training and not converted[1].weight.requires_grad
    after = converted.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    with pytest.raises(ValueError, match="2D, 3D or 4D"):
        converted[1](torch.randn(2, 4, 3, 3, 3))
