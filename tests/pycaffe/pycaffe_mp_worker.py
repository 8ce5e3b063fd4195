"""One solver process of the two-process training test (run by test_pycaffe_parallel.py).

    python pycaffe_mp_worker.py RANK COUNT UID OUT.npz STEPS BATCH MODE

Follows pycaffe's train.py recipe: set solver count/rank and multiprocess, build the solver,
join with NCCL(solver, uid), bcast, add the NCCL callback, step. Each rank feeds its own
slice of a fixed data set through MemoryData. MODE 'recipe' adds the callback as pycaffe
scripts do (solver.add_callback(nccl)); 'explicit' passes its two methods; 'torchrun' sets
no count or rank and no uid: they come from torchrun's environment variables (WORLD_SIZE,
RANK, MASTER_ADDR, MASTER_PORT) when the group is joined, before the solver is built.
"""

from __future__ import annotations

import sys

import numpy as np


def solver_text(batch: int, steps: int) -> str:
    return f"""
base_lr: 0.2 momentum: 0.9 weight_decay: 0.001 lr_policy: "fixed"
max_iter: {steps} display: 0 snapshot: 0 snapshot_after_train: false random_seed: 1701
net_param {{
  name: "mlp"
  layer {{ name: "data" type: "MemoryData" top: "data" top: "label"
          memory_data_param {{ batch_size: {batch} channels: 1 height: 2 width: 3 }} }}
  layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
          inner_product_param {{ num_output: 5 weight_filler {{ type: "gaussian" std: 0.5 }}
                                bias_filler {{ type: "uniform" min: -0.1 max: 0.1 }} }} }}
  layer {{ name: "tanh" type: "TanH" bottom: "ip1" top: "ip1" }}
  layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
          param {{ lr_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
          inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
  layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
}}
"""


def dataset(steps: int, batch: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """steps × count batches of `batch` rows, fixed by a seed."""
    rng = np.random.default_rng(7)
    n = steps * count * batch
    x = rng.normal(size=(n, 1, 2, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=n).astype(np.float32)
    return x, y


def rank_rows(steps: int, batch: int, count: int, rank: int) -> np.ndarray:
    """Rows of the data set rank feeds: at step t, batch t*count + rank."""
    idx = [np.arange((t * count + rank) * batch, (t * count + rank + 1) * batch)
           for t in range(steps)]
    return np.concatenate(idx)


def params_of(net) -> dict[str, np.ndarray]:
    return {f"{name}/{i}": np.array(b.data) for name, blobs in net.params.items()
            for i, b in enumerate(blobs)}


def main(argv: list[str]) -> None:
    rank, count, uid, out, steps, batch, how = (int(argv[1]), int(argv[2]), argv[3].encode(),
                                                argv[4], int(argv[5]), int(argv[6]), argv[7])
    from decaffe import mode
    from decaffe.layers.data import set_input_arrays
    from decaffe.pycaffe.parallel import NCCL, init_group, shutdown
    from decaffe.solvers import get_solver

    if how == "torchrun":
        init_group()
        assert (mode.solver_count(), mode.solver_rank()) == (count, rank)
        uid = b""
    else:
        mode.set_solver_count(count)
        mode.set_solver_rank(rank)
    mode.set_multiprocess(True)
    solver = get_solver(solver_text(batch, steps))
    x, y = dataset(steps, batch, count)
    rows = rank_rows(steps, batch, count, rank)
    feed = (np.ascontiguousarray(x[rows]), np.ascontiguousarray(y[rows]))
    set_input_arrays(solver.net, *feed)
    init = params_of(solver.net)
    nccl = NCCL(solver, uid)
    nccl.bcast()
    after_bcast = params_of(solver.net)
    if how == "recipe":
        solver.add_callback(nccl)
    else:
        solver.add_callback(nccl.on_start, nccl.on_gradients_ready)
    solver.step(steps)
    final = params_of(solver.net)
    shutdown()
    arrays = {}
    for tag, d in (("init", init), ("bcast", after_bcast), ("final", final)):
        arrays.update({f"{tag}:{k}": v for k, v in d.items()})
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv)
