"""Benchmark: torch CPU threads when training runs share a machine (run: `make bench`).

Side by side in one run, the same training pass (480 real tweets, length-bucketed batches, as
`bench_padding.py`) as one process at torch's default thread count, two processes at once at that
default, and two at once with one thread each (`XDT_THREADS=1`). Each process loads its model, waits
for the others, then trains; prints each setting's wall time for the training passes and the
combined samples/s. A figure to read, not a pass/fail test.
"""
import multiprocessing as mp
import time
import torch
from xdt_nb.core import set_seed
from xdt_nb.model import load_classifier, make_loader
from bench_padding import BS, N, throughput, tweets_dataset

def train_once(threads:int, barrier, results):
    if threads: torch.set_num_threads(threads)
    labels, tok, ds = tweets_dataset()
    loader = make_loader(ds, tok, BS, shuffle=True)
    set_seed(0); model = load_classifier(labels, seed=0)
    barrier.wait()  # start training together: the processes compete only while they train
    t0 = time.perf_counter(); throughput(loader, model)
    results.put((torch.get_num_threads(), time.perf_counter() - t0))

def side_by_side(n_procs:int, threads:int) -> tuple[int, float]:
    "(threads per process, wall seconds until the last of `n_procs` concurrent training passes ends)."
    ctx = mp.get_context('spawn')
    barrier, results = ctx.Barrier(n_procs), ctx.Queue()
    procs = [ctx.Process(target=train_once, args=(threads, barrier, results)) for _ in range(n_procs)]
    for p in procs: p.start()
    out = [results.get() for _ in procs]
    for p in procs: p.join()
    return out[0][0], max(s for _, s in out)

def main():
    print(f'{N} tweets per process, batch {BS}, {mp.cpu_count()} CPU cores')
    print(f"{'setting':36s} {'threads':>7s} {'wall s':>7s} {'samples/s':>10s}")
    for name, n_procs, threads in [('one run, torch default', 1, 0), ('two runs at once, torch default', 2, 0),
                                   ('two runs at once, XDT_THREADS=1', 2, 1)]:
        used, wall = side_by_side(n_procs, threads)
        print(f'{name:36s} {used:7d} {wall:7.1f} {n_procs * N / wall:10.1f}')

if __name__ == '__main__': main()
