"Regression test: a small real slice of the cross-domain study, run headlessly with papermill."

import pytest
import shutil
from xdt_nb.evaluate import RECORD_FIELDS, read_records, transfer_matrix
from xdt_nb.store import Store
from conftest import ROOT, read_json, run_study

# one few-shot pair, amazon -> tweets: the zero-shot part trains amazon's source-only model last, so `sequential` reuses it;
# and amazon + nyt -> tweets, a multi-source source stage
SLICE = dict(domains=['tweets', 'amazon'], extra_targets=[], zero_shot_methods=['vader_lexicon', 'linear_probe', 'source_only', 'lexicon_ensemble'],
             few_shot_methods=['target_only', 'sequential'], few_shot_pairs=[['amazon', 'tweets'], ['amazon+nyt', 'tweets']], n_labels=[64], seeds=[0],
             max_train=400, max_test=300, max_dev=200, epochs=2, min_steps=60, label_free_sample=100)

def records(report):
    "The records of the study store beside a report folder (DIR/reports/ENCODER -> DIR/records.jsonl)."
    return read_records(report.parent.parent/'records.jsonl')

@pytest.fixture(scope='module')
def study(tmp_path_factory):
    return run_study('run', SLICE, tmp_path_factory.mktemp('cross'))

def test_report_files(study):
    for name in ('11_cross_domain_study.ipynb', 'run.json', 'table5.md', 'few_shot.png', 'metrics.json', 'negative_transfer.csv',
                 'heatmap_source_only.png', 'heatmap_sequential.png', 'gap_by_pair.png', 'gap_by_pair.md'):
        assert (study/name).exists(), name

def test_records(study):
    recs = records(study)
    assert set(RECORD_FIELDS) <= set(recs.columns)
    # lexicon: 2 targets; probe, source_only and the ensemble: 2 sources x 2 targets; target_only and sequential: the one pair
    assert recs.groupby('method').size().to_dict() == {'vader_lexicon': 2, 'linear_probe': 4, 'source_only': 4,
                                                       'lexicon_ensemble': 4, 'target_only': 1, 'sequential': 2}
    # the ensemble's model is source_only's (reused, not trained again: same training time), calibrated on source dev
    ens = recs[recs.method == 'lexicon_ensemble'].set_index(['source', 'target'])
    so = recs[recs.method == 'source_only'].set_index(['source', 'target'])
    assert (ens.temperature > 0).all() and (ens.train_seconds == so.train_seconds.reindex(ens.index)).all(), ens
    seq = recs[(recs.method == 'sequential') & (recs.source == 'amazon')].iloc[0]
    assert seq.n_target_labels == 64 and len(seq.epochs) == 2, seq   # two stages: source, then target

def test_models_beat_the_floors(study):
    recs = records(study)
    m = read_json(study/'metrics.json')
    mean, _ = transfer_matrix(recs, 'source_only', 'weighted_f1')
    assert recs.model.unique().tolist() == [m['model']], (m['model'], recs.model.unique())  # one encoder per report
    # in-domain fine-tuning on 400 tweets: far above always-positive (weighted F1 ~0.50 on tweets)
    assert mean.loc['tweets', 'tweets'] >= 0.70, mean
    lex = recs[recs.method == 'vader_lexicon'].set_index('target').macro_f1
    assert (lex > 0.45).all(), lex   # VADER's own lexicon on VADER's data: well above a constant (~0.25)
    assert set(m['targets_met']) == {'in_domain_above_human', 'zero_shot_mean_gap', 'zero_shot_gap_closed_by_best_method',
                                     'zero_shot_share_of_mean_gap_by_best_method', 'zero_shot_share_of_mean_gap_multi_source',
                                     'labels_64_gap_to_in_domain_by_best_method', 'labels_64_gap_to_in_domain_multi_source'}
    assert m['targets_met']['zero_shot_share_of_mean_gap_multi_source'] is None and m['multi_source'] is None  # two domains: no pair of sources
    best_64 = recs[(recs.n_target_labels == 64) & ~recs.source.str.contains('+', regex=False)].weighted_f1.max()  # one source
    assert abs(m['targets_met']['labels_64_gap_to_in_domain_by_best_method'] - (mean.loc['tweets', 'tweets'] - best_64)) < 1e-9, m
    # the per-pair gap: the one single-source pair's sequential run against in-domain tweets
    seq_64 = recs[(recs.method == 'sequential') & (recs.source == 'amazon')].weighted_f1.iloc[0]
    g = m['gap_by_pair']
    assert g['method'] == 'sequential' and g['n_target_labels'] == 64 and list(g['gap']) == ['tweets'], g
    assert abs(g['gap']['tweets']['amazon'] - (mean.loc['tweets', 'tweets'] - seq_64)) < 1e-4, g
    assert g['within_02'] == (['amazon → tweets'] if g['gap']['tweets']['amazon'] <= .02 else []), g

def test_label_free_choice(study):
    recs = records(study)
    m = read_json(study/'metrics.json')
    # every zero-shot model but the lexicon itself was scored on 100 unlabelled sentences of each target
    scored = recs[recs.n_target_labels == 0].groupby('method').n_label_free.agg(lambda s: s.dropna().tolist()).to_dict()
    assert scored['vader_lexicon'] == [] and all(v == [100] * 4 for k, v in scored.items() if k != 'vader_lexicon'), scored
    so = recs[(recs.method == 'source_only') & (recs.source != recs.target)]
    assert so.lexicon_agreement.between(0, 1).all() and so.mean_confidence.between(1 / 3, 1).all(), so
    # two domains: each target has one source, so every criterion picks it and its picks score the cross pairs' mean
    criteria = m['label_free_choice']['criteria']
    assert set(criteria['best source picked']) == {'lexicon agreement', 'confidence', 'low separability', 'random source (mean)', 'oracle (best source)'}
    for c in ('lexicon agreement', 'confidence', 'low separability'):
        assert criteria['best source picked'][c] == '2 of 2' and criteria['source pairs ordered right'][c] == '0 of 0', criteria
        assert abs(criteria['mean F1 of the picks'][c] - so.weighted_f1.mean()) < 1e-9, criteria
    assert (study/'label_free_choice.png').exists() and (study/'label_free_choice.md').exists()

def test_multi_source_few_shot(study):
    recs = records(study)
    m = read_json(study/'metrics.json')
    seq = recs[recs.method == 'sequential'].set_index('source').weighted_f1
    # the multi-source run against the one single source of the slice, kept apart from every single-source table
    assert list(m['multi_source_few_shot']) == ['sequential 64 tweets amazon+nyt'], m['multi_source_few_shot']  # a row per pool of sources
    row = m['multi_source_few_shot']['sequential 64 tweets amazon+nyt']
    assert row['seeds'] == 1, row
    assert abs(row['others together'] - seq['amazon+nyt']) < 1e-4 and abs(row['one source, mean'] - seq['amazon']) < 1e-4, (row, seq)
    assert row['best source'] == 'amazon'
    in_domain = transfer_matrix(recs, 'source_only', 'weighted_f1')[0].loc['tweets', 'tweets']
    assert abs(m['targets_met']['labels_64_gap_to_in_domain_multi_source'] - (in_domain - seq['amazon+nyt'])) < 1e-9, m['targets_met']
    assert abs(m['few_shot']['sequential n=64'] - seq['amazon']) < 1e-4, m['few_shot']  # the few-shot curves leave it out

def test_rerun_trains_nothing(study, tmp_path):
    "The same command again, on a copy of the study: every experiment is in the store, so nothing trains or is appended."
    shutil.copy(study.parent.parent/'records.jsonl', tmp_path/'records.jsonl')
    before = (tmp_path/'records.jsonl').read_text()
    again = run_study('run', SLICE, tmp_path)
    assert (tmp_path/'records.jsonl').read_text() == before
    assert 'weighted F1' in (again/'11_cross_domain_study.ipynb').read_text()  # the loops ran, reading their records back
    m, m0 = (read_json(d/'metrics.json') for d in (again, study))
    same = lambda m: {k: v for k, v in m.items() if k not in ('run_id', 'command', 'wall_seconds')}
    assert same(m) == same(m0)
    assert (again/'table5.md').read_text() == (study/'table5.md').read_text()

def test_report_keeps_one_encoder(study, tmp_path):
    # the study's store again, plus a copy of each record said to come from another encoder with every score zeroed
    # (other keys: the encoder is in the spec): the report must leave the copies out (averaged in, they would halve
    # every cell), say so, and reproduce the study's own figures
    shutil.copy(study.parent.parent/'records.jsonl', tmp_path/'records.jsonl')
    store = Store(tmp_path/'records.jsonl')
    other = [r | dict(model='other-encoder', weighted_f1=0.0, macro_f1=0.0, accuracy=0.0) for r in store.records()]
    store.append(other, run_id='other')
    # a report-only run trains nothing, so: metrics.json must give the seeds of the records it reports, not seeds=[0, 1, 2];
    # and max_train=None (the whole train split, as the full-data runs in results/ use it) reaches only the report's own sampling
    report = run_study('report', SLICE | dict(seeds=[0, 1, 2], max_train=None), tmp_path)
    assert f"Left out {len(other)} records of ['other-encoder']" in (report/'11_cross_domain_study.ipynb').read_text()
    m, m0 = (read_json(d/'metrics.json') for d in (report, study))
    assert m['model'] == m0['model'] and m['targets_met'] == m0['targets_met'], (m['targets_met'], m0['targets_met'])
    assert (report/'table5.md').read_text() == (study/'table5.md').read_text()
    assert m['seeds'] == m0['seeds'] == [0] and m['n_labels'] == m0['n_labels'] == [0, 64], (m['seeds'], m['n_labels'])

def test_one_domain_report(study, tmp_path):
    # in-domain training alone (one domain, as the whole-split runs in results/ do it): no cross pair, so the tables
    # that compare sources are empty, and the report must still give the in-domain score against the human rater
    shutil.copy(study.parent.parent/'records.jsonl', tmp_path/'records.jsonl')
    report = run_study('report', SLICE | dict(domains=['tweets']), tmp_path)
    m, m0 = (read_json(d/'metrics.json') for d in (report, study))
    assert m['in_domain']['ours weighted F1'] == {'tweets': m0['in_domain']['ours weighted F1']['tweets']}, m['in_domain']
    assert m['targets_met']['in_domain_above_human'] == {'tweets': m0['targets_met']['in_domain_above_human']['tweets']}
    assert m['domain_distance']['best_source'] == {} and (report/'domain_distance.png').exists(), m['domain_distance']

def committed_records(model='all-minilm-l6-v2'):
    "The committed store's records for `model` with the whole dev split, one per experiment."
    recs = Store(ROOT/'results/11_cross_domain/records.jsonl').frame()
    return recs[(recs.model == model) & recs.spec.map(lambda s: s['dev_labels'] is None)]

def test_sequential_beats_target_only_as_the_prose_says(study):
    "11's few-shot claim, on the CI slice: starting from the source model beats the 64 target labels alone."
    def gain(recs):   # sequential minus target-only, weighted F1, per seed, amazon -> tweets at 64 labels
        r = recs[(recs.target == 'tweets') & (recs.n_target_labels == 64)]
        seq = r[(r.method == 'sequential') & (r.source == 'amazon')].set_index('seed').weighted_f1
        return (seq - r[r.method == 'target_only'].set_index('seed').weighted_f1).dropna()
    committed = gain(committed_records())
    # the full study's own seeds: the gain is positive on every one of them, so its direction is what CI may assert
    assert len(committed) >= 3 and (committed > 0).all(), committed
    ci = gain(records(study))
    assert len(ci) == 1 and ci.iloc[0] > 0, (ci, committed)

def test_a_file_of_your_own_is_a_study_domain(tmp_path):
    "A labelled CSV of the user's, registered through `files`, is a source and a target of the study like any domain."
    from xdt_nb.data import load_domain
    reviews = load_domain('movie').sample(300, random_state=0)
    reviews.rename(columns={'text': 'review', 'label': 'opinion'})[['review', 'opinion']].to_csv(tmp_path/'mine.csv', index=False)
    files = {'mine': dict(path=str(tmp_path/'mine.csv'), text_col='review', label_col='opinion')}
    params = SLICE | dict(files=files, domains=['tweets', 'mine'], zero_shot_methods=['source_only'],
                          few_shot_methods=['target_only', 'sequential'], few_shot_pairs=[['tweets', 'mine']],
                          n_labels=[16], label_free_sample=0)
    report = run_study('run', params, tmp_path/'study')
    recs = records(report)
    seq = recs[recs.method == 'sequential'].iloc[0]
    assert (seq.source, seq.target, seq.n_target_labels) == ('tweets', 'mine', 16), seq
    so = recs[recs.method == 'source_only']
    assert set(zip(so.source, so.target)) == {('tweets', 'tweets'), ('tweets', 'mine'), ('mine', 'mine'), ('mine', 'tweets')}
    assert seq.spec['data']['mine'] != seq.spec['data']['tweets']     # the file's rows have a data version of their own
    assert 'mine' in read_json(report/'metrics.json')['in_domain']['ours weighted F1']
