"The committed results: each report is rebuilt from its study's store alone, and their index is current."
import shutil
from conftest import ROOT, read_json, run_study
from xdt_nb.cli import RESULTS_HEADER
from xdt_nb.store import results_index

RESULTS = ROOT/'results'
RUN_FIELDS = ('run_id', 'command', 'wall_seconds')  # what differs between two runs of one report

def test_committed_study_reruns_to_the_same_report(tmp_path):
    "The committed MiniLM study run again (`run`, its own parameters) on a copy of its store: nothing to train, the same numbers."
    committed = RESULTS/'11_cross_domain/reports/all-minilm-l6-v2'
    shutil.copy(RESULTS/'11_cross_domain/records.jsonl', tmp_path/'records.jsonl')
    params = {k: v for k, v in read_json(committed/'run.json')['parameters'].items()
              if k not in ('phase', 'store_path', 'out_dir', 'command')}
    report = run_study('run', params, tmp_path)
    # every experiment of the study is in the store: a run that trained one would have appended its records
    assert (tmp_path/'records.jsonl').read_bytes() == (RESULTS/'11_cross_domain/records.jsonl').read_bytes()
    same = lambda m: {k: v for k, v in m.items() if k not in RUN_FIELDS}
    assert same(read_json(report/'metrics.json')) == same(read_json(committed/'metrics.json'))
    for table in sorted(committed.glob('*.md')) + [committed/'negative_transfer.csv']:
        assert (report/table.name).read_text() == table.read_text(), table.name

def test_results_index_is_current():
    "results/README.md is generated from the folders it lists: a new or moved report without `xdt results --write` fails."
    assert (RESULTS/'README.md').read_text() == RESULTS_HEADER + results_index(RESULTS), \
        'results/README.md is out of date: run `xdt results --write`'
