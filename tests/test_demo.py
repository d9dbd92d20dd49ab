"Regression tests: the parametrized demo notebook, run headlessly, must produce real numbers, and `xdt predict` must serve the model it saved."

import pandas as pd
import pytest
from xdt_nb.evaluate import RECORD_FIELDS, read_records
from conftest import read_json, run_headless, xdt

# Small but real: 64 Amazon labels, 400 tweets, 300 Amazon test and 200 dev sentences, 2 epochs.
DEMO_CI_PARAMS = dict(n_target_labels=64, max_source=400, max_test=300, max_dev=200, epochs=2, min_steps=60, lr=1e-4, seeds=[0])

@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    "Folder of a headless `xdt run 07_demo` with the CI parameters."
    return run_headless('07_demo', DEMO_CI_PARAMS, tmp_path_factory.mktemp('demo'))

def test_demo_writes_report(demo_run):
    for name in ('07_demo.ipynb', 'run.json', 'results.md', 'results.csv', 'results.png', 'metrics.json', 'records.jsonl',
                 'joint_s0/confusion.png', 'model_joint/model.safetensors'):
        assert (demo_run/name).exists(), name

def test_fine_tuned_beats_majority(demo_run):
    m = read_json(demo_run/'metrics.json')['methods']
    # transfer from 400 tweets + 64 Amazon labels must clear the majority class by a real margin
    assert m['joint']['macro_f1'] >= m['majority']['macro_f1'] + 0.20, m
    assert m['joint']['accuracy'] >= m['majority']['accuracy'] + 0.10, m
    assert m['target_only']['macro_f1'] > m['majority']['macro_f1'], m

def test_records_are_complete(demo_run):
    recs = read_records(demo_run/'records.jsonl')
    assert len(recs) == 2
    assert set(RECORD_FIELDS) <= set(recs.columns)
    assert set(recs.method) == {'target_only', 'joint'}
    assert (recs.n_target_labels == DEMO_CI_PARAMS['n_target_labels']).all()
    assert (recs.n_test == DEMO_CI_PARAMS['max_test']).all()
    assert recs.command.str.startswith('xdt run 07_demo').all()

def test_predict(demo_run, tmp_path):
    texts = ['Terrible, it broke on the first day.', 'Absolutely love this blender, five stars.']
    pd.DataFrame(dict(review=texts)).to_csv(tmp_path/'in.csv', index=False)
    r = xdt('predict', demo_run/'model_joint', tmp_path/'in.csv', tmp_path/'out.csv', '--text-col', 'review')
    assert r.returncode == 0, r.stderr
    out = pd.read_csv(tmp_path/'out.csv')
    assert list(out.label) == ['negative', 'positive']
    assert set(out.columns) == {'text', 'label', 'p_negative', 'p_neutral', 'p_positive'}

def test_predict_bad_input(demo_run, tmp_path):
    pd.DataFrame(dict(review=['fine'])).to_csv(tmp_path/'in.csv', index=False)
    r = xdt('predict', demo_run/'model_joint', tmp_path/'in.csv', tmp_path/'out.csv')
    assert r.returncode == 2 and "column(s) ['text'] not found" in r.stderr
    r = xdt('predict', tmp_path/'no_model', tmp_path/'in.csv', tmp_path/'out.csv', '--text-col', 'review')
    assert r.returncode == 2 and 'is not a saved model' in r.stderr
    pd.DataFrame(dict(text=['fine', ''])).to_csv(tmp_path/'empty.csv', index=False)
    r = xdt('predict', demo_run/'model_joint', tmp_path/'empty.csv', tmp_path/'out.csv')
    assert r.returncode == 2 and 'empty or non-string text' in r.stderr
    assert not (tmp_path/'out.csv').exists()
