"Regression test: a small real slice of the finance case study (needs the Financial PhraseBank, as CI has)."

import pytest
from xdt_nb.core import get_settings
from xdt_nb.data import PHRASEBANK_DIR
from xdt_nb.evaluate import read_records
from conftest import read_json, run_headless

# The main fine-tuning at a size where its margin over the floors is real. The ablations (one of them after minutes of
# masked-LM training), the general-domain transfer runs and the topic curve run tiny under nbdev-test (12's IN_TEST sizes).
SLICE = dict(seeds=[0], epochs=3, max_train=1000, max_test=300, max_dev=200, transfer_sources=[], min_steps=30,
             topic_n_labels=[], ablations=[])

@pytest.fixture(scope='module')
def finance(tmp_path_factory):
    if not (get_settings().data_dir/PHRASEBANK_DIR).is_dir():
        pytest.fail(f'Financial PhraseBank not found under {get_settings().data_dir}: set XDT_DATA_DIR (CI: ../shared/data).')
    return run_headless('12_finance', SLICE, tmp_path_factory.mktemp('finance'))

def test_report_files(finance):
    for name in ('12_finance.ipynb', 'run.json', 'results.md', 'metrics.json', 'errors.csv', 'confusion_50agree.png', 'ablations.md', 'ablations.png',
                 'model/model.safetensors'):
        assert (finance/name).exists(), name

def test_fine_tuned_beats_floors(finance):
    m = read_json(finance/'metrics.json')
    ft, maj = m['finetuned']['phrasebank-50'], m['majority']['phrasebank-50']
    # 1,000 finance sentences: far above always-neutral (~0.6 accuracy, ~0.25 macro-F1)
    assert ft['accuracy'] >= maj['accuracy'] + 0.15 and ft['macro_f1'] >= maj['macro_f1'] + 0.35, m
    assert m['finetuned']['phrasebank-all']['accuracy'] >= ft['accuracy'], m   # unanimous sentences are easier
    recs = read_records(finance/'records.jsonl')
    lm = recs[(recs.method == 'lm_lexicon') & (recs.target == 'phrasebank-50')].macro_f1.iloc[0]
    assert lm > maj['macro_f1'] + 0.1, lm
