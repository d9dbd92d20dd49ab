"""Profile: where `fit`'s time goes, beside `transformers.Trainer` (run: `python bench/profile_fit.py [N]`).

torch.profiler (CPU activities) over one epoch of each on the same N tweets (default 480), fp32,
batch 16; the library's own steps are marked with `record_function` from outside (wrapped here, not
edited), the optimiser's step and zero_grad are marked by torch itself. Prints each region's total
milliseconds and its share of the whole call. A figure to read, not a pass/fail test.
"""
import functools, sys, time
import torch
from torch.profiler import ProfilerActivity, profile, record_function
import accelerate
import transformers
import xdt_nb.train as train
from xdt_nb.bench import _train_fit, _train_trainer, bench_sentences
from xdt_nb.core import set_seed
from xdt_nb.data import label_space
from xdt_nb.model import load_classifier, load_tokenizer

def mark(owner, name:str, label:str):
    "Wrap `owner.name` so that each call shows in the profile as `label`."
    fn = getattr(owner, name)
    @functools.wraps(fn)
    def marked(*a, **k):
        with record_function(label): return fn(*a, **k)
    setattr(owner, name, marked)

FIT_REGIONS = dict(prepare_run='fit: prepare (tokenise, loaders, Accelerate)', start_progress='fit: start copy of weights',
                   backward_batches='fit: forward + backward', optimiser_step='fit: optimiser step (clip, AdamW, schedule)',
                   score_dev='fit: dev evaluation', _tensors='fit: best-weights copies')
for name, label in FIT_REGIONS.items(): mark(train, name, label)
mark(transformers.Trainer, 'training_step', 'Trainer: forward + backward')
mark(accelerate.Accelerator, 'clip_grad_norm_', 'gradient clipping')

def profiled(run, n:int):
    labels, tok, df = label_space('sentiment'), load_tokenizer(), bench_sentences(n)
    set_seed(0)
    model = load_classifier(labels, seed=0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        with record_function('whole call'): run(model, tok, labels, df, False)
        seconds = time.perf_counter() - start
    return seconds, {e.key: e.cpu_time_total / 1e3 for e in prof.key_averages()}

def main(n:int=480):
    print(f'{n} tweets, one epoch, batch 16, fp32, torch threads {torch.get_num_threads()}')
    for name, run in (('fit', _train_fit), ('Trainer', _train_trainer)):
        seconds, ms = profiled(run, n)
        whole = ms['whole call']
        print(f'\n{name}: {seconds:.1f} s, {n / seconds:.1f} samples/s (under the profiler)')
        regions = [k for k in ms if k.startswith(('fit:', 'Trainer:', 'gradient', 'Optimizer.'))]
        for k in sorted(regions, key=ms.get, reverse=True):
            print(f'  {k:48s} {ms[k]:9.0f} ms {ms[k] / whole:6.1%}')

if __name__ == '__main__': main(int(sys.argv[1]) if len(sys.argv) > 1 else 480)
