"The `xdt` command line: each verb works, and bad input gets one clear line and exit status 2 (`xdt predict`: test_demo.py, on the demo's model)."
import pandas as pd
from conftest import xdt

def test_list():
    r = xdt('list')
    assert r.returncode == 0, r.stderr
    for word in ('tweets', 'phrasebank-50', 'joint', '07_demo'): assert word in r.stdout

def test_fetch_unknown():
    r = xdt('data', 'fetch', 'imdb')
    assert r.returncode == 2 and 'Unknown resource' in r.stderr

def test_run_errors():
    r = xdt('run', 'no_such_notebook')
    assert r.returncode == 2 and 'not found' in r.stderr
    r = xdt('run', '07_demo', '-p', 'epochz', '3')
    assert r.returncode == 2 and "no parameter(s) ['epochz']" in r.stderr

def test_train(tmp_path):
    out = tmp_path/'run'
    r = xdt('train', 'amazon', '--method', 'target_only', '--n-labels', 48, '--epochs', 1, '--out-dir', out, '--label-free', 40)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'macro-F1' in r.stdout
    rec = pd.read_json(out/'records.jsonl', lines=True).iloc[0]
    assert rec.n_target_labels == 48 and rec.command.startswith('xdt train amazon')
    assert rec.n_label_free == 40 and 0 <= rec.lexicon_agreement <= 1 and 1 / 3 <= rec.mean_confidence <= 1, rec
    assert (out/'model'/'model.safetensors').exists() and (out/'confusion.png').exists()
    assert not (out/'checkpoint').exists()   # removed once the run is recorded
