"""Training as 2 processes (torchrun, gloo on CPU) agrees with 1 process at the same global batch.

2 processes × batches of 8 against 1 process accumulating 2 batches of 8 (`accumulation_steps=2`): Accelerate
shards the batch sequence round-robin (process 0 takes batches 0, 2, 4, ..., process 1 takes 1, 3, 5, ...), so
each optimiser step sees the very batches that one process accumulates, and the averaged gradients are the
same sums. Dropout is off (an encoder folder whose config says 0): each process would draw its own masks.
What still differs is the order of float32 additions (gloo's all-reduce against autograd's accumulation),
about 1e-7 relative per step, which Adam's per-weight normalisation carries into the weights. Hence the
tolerances below: losses to 1e-5 relative, test probabilities to 1e-4, the same dev scores and test
predictions (on the 2-core CPU this was written on, torch 2.13, the two runs agree to the last bit).
With the bug this test found (Accelerate's shard kept the sampler's epoch from changing, so the second
epoch repeated the first one's order) the second epoch's train loss was 1.0400 against 1.0358. The 2-process run also shows that the whole train/evaluate/save path runs (before the
evaluation gathered equal-shape tensors from batches of different sizes and gloo aborted) and that only
the main process writes: one record, one result file.
"""
import json, os, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest

from xdt_nb.model import resolve_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT/'tests'/'distributed_run.py'

@pytest.fixture(scope='module')
def encoder_without_dropout(tmp_path_factory):
    "The default encoder's folder with its dropout rates set to 0 (the weights and tokenizer linked)."
    src, out = Path(resolve_model()), tmp_path_factory.mktemp('encoder')
    for f in src.iterdir():
        if f.name != 'config.json': (out/f.name).symlink_to(f.resolve())
    config = json.loads((src/'config.json').read_text())
    config |= dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out/'config.json').write_text(json.dumps(config))
    return out

def launch(cmd, out):
    "Run `cmd` (one thread per process), fail with its output if it fails; the result the main process wrote."
    env = os.environ | dict(OMP_NUM_THREADS='1', XDT_THREADS='1', XDT_PROGRESS='0', PYTHONPATH=str(ROOT))
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return json.loads((out/'result.json').read_text())

@pytest.fixture(scope='module')
def runs(encoder_without_dropout, tmp_path_factory):
    "(one process accumulating 2 batches, two processes), each a `distributed_run.py` result; and the folders."
    one, two = tmp_path_factory.mktemp('one'), tmp_path_factory.mktemp('two')
    single = launch([sys.executable, SCRIPT, one, encoder_without_dropout, '--accumulation-steps', '2'], one)
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
    double = launch([*torchrun, SCRIPT, two, encoder_without_dropout], two)
    return single, double, two

def test_two_processes_train_evaluate_and_save(runs):
    _, double, folder = runs
    assert len((folder/'records.jsonl').read_text().splitlines()) == 1   # the main process alone writes
    assert (folder/'model'/'model.safetensors').exists() and (folder/'metrics.json').exists()
    assert not (folder/'checkpoint').exists()
    assert [h['epoch'] for h in double['history']] == [0, 1]
    assert double['record']['n_target_labels'] == 64

def test_two_processes_agree_with_one_at_the_same_global_batch(runs):
    single, double, _ = runs
    for a, b in zip(single['history'], double['history'], strict=True):
        assert (a['epoch'], a['step']) == (b['epoch'], b['step'])
        assert b['train_loss'] == pytest.approx(a['train_loss'], rel=1e-5)
        assert (b['dev_macro_f1'], b['dev_accuracy']) == (a['dev_macro_f1'], a['dev_accuracy'])
    p1, p2 = np.array(single['proba']), np.array(double['proba'])
    assert np.abs(p1 - p2).max() < 1e-4
    assert (p1.argmax(1) == p2.argmax(1)).all()
    assert single['record']['macro_f1'] == double['record']['macro_f1']
