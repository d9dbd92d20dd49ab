"The `xdt` command line: each verb works, and bad input gets one clear line and exit status 2 (`xdt predict`: test_demo.py, on the demo's model)."
import pandas as pd
from conftest import xdt
from xdt_nb.data import load_domain

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

STARS = {'negative': ('1', '2'), 'neutral': ('3', '3'), 'positive': ('4', '5')}  # a user's own 5-star labels

def test_train_on_own_file_then_predict(tmp_path):
    "A user's CSV (own column names, 1-5 stars) as target, tweets as source, then `xdt predict` on a second CSV."
    movie = load_domain('movie')
    sample = movie.groupby('label').head(40)   # 120 sentences, every class
    stars = [STARS[label][i % 2] for i, label in enumerate(sample.label)]
    pd.DataFrame(dict(review=sample.text, stars=stars)).to_csv(tmp_path/'my_reviews.csv', index=False)
    train = ['train', tmp_path/'my_reviews.csv', '--source', 'tweets', '--method', 'joint',
             '--text-col', 'review', '--label-col', 'stars']
    r = xdt(*train)   # stars are not tweets' labels: refused before training, naming both label sets and the flag
    assert r.returncode == 2, r.stderr[-2000:]
    assert "labels ['negative', 'neutral', 'positive'] and ['1', '2', '3', '4', '5']" in r.stderr, r.stderr
    assert "--label-map='1=negative,2=negative,3=neutral,4=positive,5=positive'" in r.stderr, r.stderr
    out = tmp_path/'run'
    r = xdt(*train, '--label-map', '1=negative,2=negative,3=neutral,4=positive,5=positive',
            '--epochs', 1, '--max-source', 64, '--out-dir', out)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = pd.read_json(out/'records.jsonl', lines=True).iloc[0]
    assert (rec.target, rec.source, rec.task, rec.n_source) == ('my_reviews', 'tweets', 'sentiment', 64), rec
    assert rec.n_target_labels + rec.n_dev + rec.n_test == 120
    new = movie[~movie.text.isin(sample.text)].head(25)
    new.rename(columns={'text': 'review'})[['review']].to_csv(tmp_path/'new.csv', index=False)
    r = xdt('predict', out/'model', tmp_path/'new.csv', tmp_path/'preds.csv', '--text-col', 'review')
    assert r.returncode == 0, r.stderr[-2000:]
    preds = pd.read_csv(tmp_path/'preds.csv')
    assert preds.text.tolist() == new.text.tolist() and set(preds.label) <= {'negative', 'neutral', 'positive'}
    assert list(preds.columns) == ['text', 'label', 'p_negative', 'p_neutral', 'p_positive']
