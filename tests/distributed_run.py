"""One small `run_experiment` (train, evaluate, save), as `tests/test_distributed.py` launches it: under
`torchrun --nproc_per_node 2` with batches of 8 per process, or as one process accumulating 2 batches of 8.

    python tests/distributed_run.py OUT_DIR MODEL_DIR --accumulation-steps 2
    torchrun --standalone --nproc_per_node 2 tests/distributed_run.py OUT_DIR MODEL_DIR

The main process writes OUT_DIR/result.json: the fit's history and the test probabilities.
"""
import argparse, json
from pathlib import Path

from accelerate import PartialState
from xdt_nb.evaluate import predict_proba
from xdt_nb.train import TrainConfig
from xdt_nb.transfer import run_experiment, save_model, target_test

N_LABELS, MAX_DEV, MAX_TEST = 64, 96, 200

def main():
    p = argparse.ArgumentParser()
    p.add_argument('out_dir', type=Path)
    p.add_argument('model_dir')
    p.add_argument('--accumulation-steps', type=int, default=1)
    a = p.parse_args()
    cfg = TrainConfig(epochs=2, batch_size=8, accumulation_steps=a.accumulation_steps, eval_steps=1)
    r = run_experiment('tweets', 'target_only', n_target_labels=N_LABELS, cfg=cfg, model_name=a.model_dir,
                       out_dir=a.out_dir, records=a.out_dir/'records.jsonl', max_dev=MAX_DEV, max_test=MAX_TEST)
    if not PartialState().is_main_process: return
    save_model(r.model, r.tokenizer, a.out_dir/'model', r.record)
    proba = predict_proba(r.model, r.tokenizer, target_test('tweets', MAX_TEST).text.tolist())
    result = dict(history=r.fits[0].history, record=r.record, proba=proba.tolist())
    (a.out_dir/'result.json').write_text(json.dumps(result))

if __name__ == '__main__': main()
