"Regression tests: the parametrized demo notebook, run headlessly, must produce real numbers."

from xdt_nb.evaluate import RECORD_FIELDS, read_records
from conftest import DEMO_CI_PARAMS, read_json

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
