"""Two-process gloo DistributedDataParallel training of a Glow (standard and memory-saving,
class-conditional): ActNorm init and parameters identical on both ranks, loss decreasing, both
modes giving the same gradients and losses."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

import flowkern
from flowkern.nn import MultiScaleFlow, build_glow

from .test_distributed import _free_port

STEPS = 6


def _rank_data(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + step)
    # ranks see different data: different brightness and contrast
    x = torch.rand(8, 2, 4, 4, generator=g) * (0.5 + 0.5 * rank) + 0.25 * rank
    return x, torch.randint(0, 2, (8,), generator=g)


def _worker(rank: int, port: int, backend: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results = {}
        with flowkern.backends.use(backend):
            for memory_saving in (False, True):
                torch.manual_seed(rank)  # different init per rank: DDP must broadcast rank 0's
                flow = build_glow((2, 4, 4), levels=2, depth=2, hidden=8, num_classes=2, memory_saving=memory_saving)
                model = DDP(flow)
                opt = torch.optim.Adam(model.parameters(), lr=5e-3)
                losses = []
                for step in range(STEPS):
                    x, c = _rank_data(rank, step % 2)
                    loss = MultiScaleFlow.nll(*model(x, c))
                    if step == 0:
                        init = {k: v.detach().clone() for k, v in flow.state_dict().items()}
                    opt.zero_grad()
                    loss.backward()
                    if step == 0:
                        first_grads = {n: p.grad.clone() for n, p in flow.named_parameters()}
                    opt.step()
                    global_loss = loss.detach().clone()
                    dist.all_reduce(global_loss)
                    losses.append(global_loss.item() / 2)
                results[memory_saving] = dict(init=init, final=flow.state_dict(), losses=losses, grads=first_grads)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_glow(tmp_path):
    backend = flowkern.backends.select(torch.device("cpu")).name
    mp.spawn(_worker, args=(_free_port(), backend, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    union = torch.cat([_rank_data(0, 0)[0], _rank_data(1, 0)[0]]).double()
    from flowkern.nn.squeeze import squeeze2x2

    u = squeeze2x2(union, "glow")  # the first step's actnorm sees the squeezed image
    for mode in (False, True):
        a, b = r0[mode], r1[mode]
        for key in a["init"]:
            assert torch.equal(a["init"][key], b["init"][key]), f"init {key} differs between ranks"
            assert torch.equal(a["final"][key], b["final"][key]), f"trained {key} differs between ranks"
        # the first actnorm was initialised from the statistics of BOTH ranks' data
        mean = u.transpose(0, 1).reshape(8, -1).mean(1)
        torch.testing.assert_close(a["init"]["levels.0.1.actnorm.loc"].double(), -mean, rtol=1e-5, atol=1e-5)
        assert a["losses"] == b["losses"]
        assert sum(a["losses"][-2:]) / 2 < sum(a["losses"][:2]) / 2, a["losses"]
    # both modes give the same all-reduced gradients (up to float32 recomputation error) ...
    for key, g in r0[False]["grads"].items():
        torch.testing.assert_close(r0[True]["grads"][key], g, rtol=1e-3, atol=1e-5, msg=key)
    # ... and train alike: losses within 0.5 nats of ~20 (parameters are not compared: behind the zero-initialised
    # last layers the first steps' gradients are rounding noise, which Adam's normalised steps blow up)
    torch.testing.assert_close(torch.tensor(r0[True]["losses"]), torch.tensor(r0[False]["losses"]), rtol=0, atol=0.5)
