"""Two-process gloo DistributedDataParallel training of a Flow (standard and memory-saving):
ActNorm init statistics and parameters identical on both ranks, loss decreasing."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

import flowkern
from flowkern.nn import Flow, build_flow

STEPS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_data(rank: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * rank + step)
    # ranks see different data: different means and scales
    return torch.randn(64, 6, generator=g) * (1.0 + rank) + 3.0 * rank


def _worker(rank: int, port: int, backend: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results = {}
        with flowkern.backends.use(backend):
            for memory_saving in (False, True):
                torch.manual_seed(rank)  # different init per rank: DDP must broadcast rank 0's
                flow = build_flow(6, 2, 32, depth=1, memory_saving=memory_saving)
                model = DDP(flow)
                opt = torch.optim.Adam(model.parameters(), lr=2e-3)
                losses = []
                for step in range(STEPS):
                    loss = Flow.nll(*model(_rank_data(rank, step)))
                    if step == 0:
                        init = {k: v.detach().clone() for k, v in flow.state_dict().items()}
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    global_loss = loss.detach().clone()
                    dist.all_reduce(global_loss)
                    losses.append(global_loss.item() / 2)
                results[memory_saving] = dict(init=init, final=flow.state_dict(), losses=losses)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks(tmp_path):
    backend = flowkern.backends.select(torch.device("cpu")).name
    mp.spawn(_worker, args=(_free_port(), backend, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    union = torch.cat([_rank_data(0, 0), _rank_data(1, 0)]).double()
    for mode in (False, True):
        a, b = r0[mode], r1[mode]
        for key in a["init"]:
            assert torch.equal(a["init"][key], b["init"][key]), f"init {key} differs between ranks"
            assert torch.equal(a["final"][key], b["final"][key]), f"trained {key} differs between ranks"
        # the first ActNorm was initialised from the statistics of BOTH ranks' data
        torch.testing.assert_close(a["init"]["blocks.0.loc"].double(), -union.mean(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a["init"]["blocks.0.scale"].double(), 1 / union.std(0), rtol=1e-4, atol=1e-5)
        assert int(a["init"]["blocks.0.initialized"]) == 1
        assert a["losses"] == b["losses"]
        assert sum(a["losses"][-3:]) / 3 < sum(a["losses"][:3]) / 3
    # both modes train identically (up to float32 recomputation error)
    for key in r0[False]["final"]:
        torch.testing.assert_close(r0[True]["final"][key], r0[False]["final"][key], rtol=1e-3, atol=1e-4)
