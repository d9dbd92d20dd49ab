"""Benchmark: training throughput of the three ways to batch (run: `make bench`).

Side by side in one run, on the same 480 real tweets, same model and optimiser: padding every
sentence to 128 tokens (the seed article's recipe), dynamic padding in random batches, and
dynamic padding in length buckets (the package's default). Prints samples/s, padding share and
the speed-up over the seed recipe. A figure to read, not a pass/fail test.
"""
import time
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding
from xdt_nb.core import set_seed
from xdt_nb.data import label_space, load_domain
from xdt_nb.model import TextDataset, load_classifier, load_tokenizer, make_loader, padding_share
from xdt_nb.train import label_ids

N, BS = 480, 16

def throughput(loader, model) -> float:
    "Training samples per second over one pass of `loader` (forward, backward, AdamW step)."
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train(); n, t0 = 0, time.perf_counter()
    for b in loader:
        b.pop('idx')
        model(**b).loss.backward(); opt.step(); opt.zero_grad()
        n += len(b['labels'])
    return n / (time.perf_counter() - t0)

def tweets_dataset():
    "(labels, tokenizer, dataset) of the same N real tweets for every benchmark."
    labels, tok = label_space('sentiment'), load_tokenizer()
    df = load_domain('tweets', 'train').sample(N, random_state=0)
    return labels, tok, TextDataset(tok, df.text.tolist(), label_ids(df.label, labels))

def main():
    labels, tok, ds = tweets_dataset()
    loaders = {
        'pad to 128 (seed article)': DataLoader(ds, BS, shuffle=True, collate_fn=DataCollatorWithPadding(tok, padding='max_length', max_length=128)),
        'dynamic padding': make_loader(ds, tok, BS, shuffle=True, bucket=False),
        'dynamic + length buckets': make_loader(ds, tok, BS, shuffle=True),
    }
    print(f'{N} tweets, batch {BS}, torch threads {torch.get_num_threads()}')
    rows = {}
    for name, loader in loaders.items():
        set_seed(0)
        rows[name] = (throughput(loader, load_classifier(labels, seed=0)), padding_share(loader))
    base = rows['pad to 128 (seed article)'][0]
    print(f"{'batching':28s} {'samples/s':>10s} {'padding':>8s} {'speed-up':>9s}")
    for name, (sps, pad) in rows.items(): print(f'{name:28s} {sps:10.1f} {pad:8.1%} {sps / base:8.2f}x')

if __name__ == '__main__': main()
