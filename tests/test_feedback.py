"""Claim tests of `16_feedback`: pruning reaches into `fit`; the active-learning strategies pick what they claim.

Each fails when the mechanism it guards is removed: `fit` not calling its `on_eval` hook, a strategy ranking the
wrong way, k-center ignoring the distances, an unseeded random draw.
"""
import numpy as np
import optuna
import pytest

from xdt_nb import feedback as FB, train as T
from xdt_nb.data import label_space, load_domain
from xdt_nb.model import load_classifier, load_tokenizer
from xdt_nb.transfer import few_shot

LABELS = list(label_space('sentiment'))


def _rows(split, n):
    df = load_domain('tweets', split)
    return few_shot(df[df.text.str.len().between(20, 120)].drop_duplicates('text'), n, 0)[['text', 'label']]


def _small_model():
    "MiniLM-L6 cut to its first block: a fit of a few steps takes a second."
    m = load_classifier(LABELS, seed=0)
    m.bert.encoder.layer = m.bert.encoder.layer[:1]
    m.config.num_hidden_layers = 1
    return m


@pytest.mark.parametrize('prune', [True, False])
def test_pruning_stops_fit_at_its_first_evaluation(prune):
    "The dev macro-F1 reaches the trial from inside `fit`; a pruned trial ends training there."
    pruner = optuna.pruners.ThresholdPruner(lower=2.0) if prune else optuna.pruners.NopPruner()
    trial = optuna.create_study(direction='maximize', pruner=pruner).ask()
    cfg = T.TrainConfig(epochs=3, batch_size=8, max_length=32, lr=1e-4, eval_steps=1, patience=5)
    run = lambda: T.fit(_small_model(), load_tokenizer(), LABELS, _rows('train', 8), _rows('dev', 6), cfg=cfg,
                        on_eval=FB.PruneOnDev(trial))
    if prune:
        with pytest.raises(optuna.TrialPruned): run()
    else:
        assert len(run().history) == 3
    reported = trial.storage.get_trial(trial._trial_id).intermediate_values
    assert len(reported) == (1 if prune else 3)   # one report per evaluation, none after the prune


def test_entropy_picks_the_most_uncertain_rows():
    proba = np.array([[.9, .05, .05], [.34, .33, .33], [.6, .2, .2], [.5, .25, .25], [.98, .01, .01]])
    assert sorted(FB.query('entropy', proba, np.zeros((5, 2)), [], 2)) == [1, 3]
    # labelled rows are never picked
    assert FB.query('entropy', proba, np.zeros((5, 2)), [1], 1).tolist() == [3]


def test_margin_picks_the_closest_two_classes():
    proba = np.array([[.34, .33, .33], [.02, .49, .49], [.9, .05, .05]])
    assert FB.query('margin', proba, np.zeros((3, 2)), [], 1).tolist() == [1]


def test_kcenter_picks_spread_points():
    "Two tight clusters far apart: starting from one, k-center takes the other before any near neighbour."
    rng = np.random.default_rng(0)
    near, far = rng.normal([1, 0], .01, (10, 2)), rng.normal([-1, 0], .01, (10, 2))
    vectors = np.concatenate([near, far])
    picked = FB.query('kcenter', np.full((20, 3), 1 / 3), vectors, [0], 1)
    assert picked[0] >= 10
    two = FB.query('kcenter', np.full((20, 3), 1 / 3), vectors, [0], 2)
    assert len(set(two)) == 2 and 0 not in two


def test_random_is_seeded():
    flat = np.full((50, 3), 1 / 3)
    draw = lambda seed: FB.query('random', flat, np.zeros((50, 2)), [0, 1], 5, seed=seed).tolist()
    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert not {0, 1} & set(draw(3))
