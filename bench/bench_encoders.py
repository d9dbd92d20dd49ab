"""Benchmark: what a five times larger encoder costs to fine-tune here (run: `make bench`).

Side by side in one run, on the same 480 real movie-review sentences, the package's batching
(dynamic padding in length buckets) and the same optimiser: the default MiniLM-L6 and
all-mpnet-base-v2 (fetched on first use, 404 MB). Prints parameters, training samples/s and the
slow-down, the figure behind "Is it the encoder?" in `11_cross_domain`. Not a pass/fail test.
"""
import torch
from bench_padding import N, BS, throughput
from xdt_nb.data import label_space, load_domain
from xdt_nb.model import TextDataset, load_classifier, load_tokenizer, make_loader
from xdt_nb.train import label_ids

ENCODERS = ('all-minilm-l6-v2', 'all-mpnet-base-v2')

def main():
    labels = label_space('sentiment')
    df = load_domain('movie', 'train').sample(N, random_state=0)
    print(f'{N} movie sentences, batch {BS}, torch threads {torch.get_num_threads()}')
    rows = {}
    for name in ENCODERS:
        tok = load_tokenizer(name)
        loader = make_loader(TextDataset(tok, df.text.tolist(), label_ids(df.label, labels)), tok, BS, shuffle=True)
        model = load_classifier(labels, name, seed=0)  # seeds its head; make_loader seeds the batch order
        rows[name] = (sum(p.numel() for p in model.parameters()) / 1e6, throughput(loader, model))
    base = rows[ENCODERS[0]][1]
    print(f"{'encoder':20s} {'params (M)':>10s} {'samples/s':>10s} {'time':>6s}")
    for name, (params, sps) in rows.items(): print(f'{name:20s} {params:10.1f} {sps:10.1f} {base / sps:5.1f}x')

if __name__ == '__main__': main()
