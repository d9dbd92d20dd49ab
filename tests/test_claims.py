"""Claim tests: each one fails when the mechanism it guards is removed, weakened or reversed.

Small and deterministic: the default encoder cut to its first two blocks with dropout off, a few real
sentences, fixed seeds. `make test-claims` runs them; `make mutate` checks that they kill mutants of
the library (results/mutation/).
"""
import copy, dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator

from xdt_nb import adversarial as A, evaluate as E, objective as O, train as T, transfer as X
from xdt_nb.data import hash_split, label_space, load_domain
from xdt_nb.model import load_classifier, load_tokenizer

LABELS = list(label_space('sentiment'))
K = len(LABELS)

# ---------------------------------------------------------------------------------------------------
# fixtures: a small real encoder and real sentences

@pytest.fixture(scope='session')
def tok(): return load_tokenizer()

@pytest.fixture(scope='session')
def small_model():
    "MiniLM-L6 cut to its first two blocks, dropout off: a step's logits depend on the weights and batch alone."
    m = load_classifier(LABELS, seed=0)
    m.bert.encoder.layer = m.bert.encoder.layer[:2]
    m.config.num_hidden_layers = 2
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout): mod.p = 0.0
    return m

@pytest.fixture
def model(small_model): return copy.deepcopy(small_model)

def _sample(domain, split, n, seed=0):
    "`n` real rows of `domain`, every class present, texts unique after tokenisation (short ones: fast steps)."
    df = load_domain(domain, split)
    df = df[df.text.str.len().between(20, 120)].drop_duplicates('text')
    return X.few_shot(df, n, seed)[['text', 'label']]

@pytest.fixture(scope='session')
def target(): return _sample('tweets', 'train', 8)

@pytest.fixture(scope='session')
def source(): return _sample('nyt', 'train', 8)

@pytest.fixture(scope='session')
def dev(): return _sample('tweets', 'dev', 12)

def cfg(**kw):
    "A small run: one step per epoch over 8 rows, no warm-up, no clipping worth the name, no class weights."
    return T.TrainConfig(**dict(epochs=1, batch_size=8, lr=1e-4, warmup=0.0, class_weights=False, eval_steps=1,
                                patience=100, max_grad_norm=1e6) | kw)

# ---------------------------------------------------------------------------------------------------
# what `fit` back-propagates, step by step

class StepSpy:
    "Records the labelled forward passes of each training step (input ids, logits) and the loss `fit` back-propagates."
    def __init__(self, monkeypatch, model):
        self.passes, self.losses = [], []
        model.register_forward_hook(self._forward, with_kwargs=True)
        backward = Accelerator.backward
        def spy(acc, loss, **kw):
            self.losses.append(loss.detach().double().item())
            return backward(acc, loss, **kw)
        monkeypatch.setattr(Accelerator, 'backward', spy)

    def _forward(self, mod, args, kwargs, out):
        if mod.training: self.passes.append((kwargs['input_ids'].detach(), out.logits.detach().double()))

def _labels_of(tok, rows, input_ids):
    "One-hot labels of the rows of `rows` a batch of `input_ids` holds, matched by their token ids."
    by_ids = {tuple(tok(t, truncation=True, max_length=128)['input_ids']): l for t, l in zip(rows.text, rows.label)}
    ys = [by_ids[tuple(r[r != tok.pad_token_id].tolist())] for r in input_ids]
    return np.eye(K)[T.label_ids(ys, LABELS)]

@pytest.mark.parametrize('schedule', A.SCHEDULES)
@pytest.mark.parametrize('alpha', [0.3, 2.5])
def test_fit_minimises_the_objective_of_10_math(monkeypatch, model, tok, target, source, dev, schedule, alpha):
    "At every step the loss `fit` back-propagates is objective.joint_loss = L_t + alpha(p) L_s on the same logits."
    spy = StepSpy(monkeypatch, model)
    c = cfg(epochs=4, alpha=alpha, alpha_schedule=schedule)
    T.fit(model, tok, LABELS, target, dev, source=source, cfg=c)
    assert len(spy.losses) == 4 and len(spy.passes) == 8   # a target and a source pass per step
    identity, zero = np.eye(K), np.zeros(K)
    for step, loss in enumerate(spy.losses):
        (ids_t, logits_t), (ids_s, logits_s) = spy.passes[2 * step: 2 * step + 2]
        a = A.schedule_value(schedule, alpha, step / 4)
        # softmax(X W^T + b) with W = I, b = 0 is softmax of the logits themselves
        expected = O.joint_loss(identity, zero, (logits_t.numpy(), _labels_of(tok, target, ids_t)),
                                (logits_s.numpy(), _labels_of(tok, source, ids_s)), a)
        assert loss == pytest.approx(expected, rel=1e-5), (step, a)

def test_alpha_zero_is_target_only_exactly(tok, small_model, target, source, dev):
    "alpha = 0 with a source gives the very weights of a run without one; alpha > 0 does not (the test can tell)."
    def weights(src, alpha):
        m = copy.deepcopy(small_model)
        T.fit(m, tok, LABELS, target, dev, source=src, cfg=cfg(epochs=2, alpha=alpha))
        return T._tensors(m)
    alone = weights(None, 0.0)
    assert all(torch.equal(alone[k], v) for k, v in weights(source, 0.0).items())
    assert not all(torch.equal(alone[k], v) for k, v in weights(source, 0.5).items())

def _flat(state, names): return torch.cat([state[n].flatten() for n in names])

def test_alpha_moves_the_update_down_the_source_gradient(tok, small_model, target, source, dev):
    "One step at alpha = 1 against alpha = 0: the difference points down the source loss's gradient, and L_s is lower."
    start = T._tensors(small_model)
    def one_step(alpha):
        m = copy.deepcopy(small_model)
        T.fit(m, tok, LABELS, target, dev, source=source, cfg=cfg(alpha=alpha, weight_decay=0.0))
        return m
    m0, m1 = one_step(0.0), one_step(1.0)
    # the source gradient at the start weights, on the same rows (one batch of 8)
    m = copy.deepcopy(small_model); m.train()
    def source_loss(net):
        b = tok(source.text.tolist(), padding=True, truncation=True, max_length=128, return_tensors='pt')
        return torch.nn.functional.cross_entropy(net(**b).logits, torch.tensor(T.label_ids(source.label, LABELS)))
    source_loss(m).backward()
    names = [n for n, p in m.named_parameters() if p.grad is not None]
    g_s = torch.cat([dict(m.named_parameters())[n].grad.flatten() for n in names])
    delta = _flat(T._tensors(m1), names) - _flat(T._tensors(m0), names)
    assert torch.dot(delta, -g_s) > 0
    with torch.no_grad(): assert source_loss(m1) < source_loss(m0)
    assert not torch.equal(_flat(start, names), _flat(T._tensors(m0), names))   # both runs trained

def test_class_weights_are_balanced_and_fit_uses_them(monkeypatch, model, tok, source, dev):
    "class_weights: n / (K n_y), and the target loss of `fit` is the cross-entropy weighted by them."
    y = np.array([0, 0, 0, 0, 0, 0, 1, 2])
    assert np.allclose(T.class_weights(y, 3).numpy(), [8 / 18, 8 / 3, 8 / 3])
    assert np.allclose(T.class_weights(np.array([0, 0, 1]), 3).numpy(), [0.5, 1.0, 1.0])   # an absent class: 1
    skewed = source.assign(label=[LABELS[i] for i in y])
    spy = StepSpy(monkeypatch, model)
    T.fit(model, tok, LABELS, skewed, dev, cfg=cfg(class_weights=True))
    (ids, logits), = spy.passes
    onehot = _labels_of(tok, skewed, ids)
    w = T.class_weights(y, 3).double().numpy()[onehot.argmax(1)]
    nll = -np.log(O.softmax(logits.numpy())[onehot.astype(bool)])
    assert spy.losses[0] == pytest.approx((w * nll).sum() / w.sum(), rel=1e-5)
    assert spy.losses[0] != pytest.approx(nll.mean(), rel=1e-3)   # the weights change the loss here

# ---------------------------------------------------------------------------------------------------
# domain-adversarial training

class DomainHeadSpy(A.DomainClassifier):
    "The domain classifier of `fit`, recording per step lambda, the features' gradient and the gradient behind the reversal."
    steps = []
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.net.register_forward_pre_hook(self._watch_reversed)

    def _watch_reversed(self, mod, args): args[0].register_hook(self._after_reversal)

    def forward(self, feats, lam=1.0):
        DomainHeadSpy.steps.append(dict(lam=lam))
        feats.register_hook(lambda g: DomainHeadSpy.steps[-1].__setitem__('features', g.detach().clone()))
        return super().forward(feats, lam)

    def _after_reversal(self, g): DomainHeadSpy.steps[-1]['classifier'] = g.detach().clone()

def test_gradient_reversal_sign_and_size(monkeypatch, model, tok, target, source, dev):
    "The encoder's features get the domain classifier's gradient times -lambda, lambda on Ganin's ramp at that step."
    DomainHeadSpy.steps = []
    monkeypatch.setattr(T, 'DomainClassifier', DomainHeadSpy)
    T.fit(model, tok, LABELS, target, dev, source=source, cfg=cfg(epochs=4, alpha=1.0, adversarial=0.7))
    assert len(DomainHeadSpy.steps) == 4
    for step, s in enumerate(DomainHeadSpy.steps):
        lam = A.schedule_value('ganin', 0.7, step / 4)
        assert s['lam'] == pytest.approx(lam)
        torch.testing.assert_close(s['features'], -lam * s['classifier'])
        if step: assert s['features'].abs().sum() > 0

def test_grad_reverse_alone():
    x = torch.randn(4, 3, requires_grad=True)
    y = A.grad_reverse(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.arange(12.).view(4, 3)).sum().backward()
    assert torch.equal(x.grad, -0.25 * torch.arange(12.).view(4, 3))

def test_schedules():
    assert A.ganin_ramp(0) == 0 and A.ganin_ramp(1) == pytest.approx(2 / (1 + np.exp(-10)) - 1)
    assert A.schedule_value('constant', 2.0, 0.3) == 2.0
    assert A.schedule_value('linear_decay', 2.0, 0.25) == pytest.approx(1.5)
    assert A.schedule_value('ganin', 2.0, 0.5) == pytest.approx(2 * A.ganin_ramp(0.5))
    assert A.schedule_value('linear_decay', 2.0, 1.5) == 0.0   # p is clipped to [0, 1]
    with pytest.raises(ValueError, match='Unknown schedule'): A.schedule_value('cosine', 1.0, 0.5)

def test_mean_pool_ignores_padding():
    h = torch.tensor([[[1., 1.], [3., 5.], [100., 100.]]])
    assert torch.equal(A.mean_pool(h, torch.tensor([[1, 1, 0]])), torch.tensor([[2., 3.]]))

# ---------------------------------------------------------------------------------------------------
# the training loop's promises

def scripted_dev(monkeypatch, scores):
    "Make `fit`'s dev macro-F1 the given sequence (then a constant), so that which weights are best is known."
    it = iter(scores)
    monkeypatch.setattr(T, 'macro_f1', lambda *a, **kw: next(it, -5.0))

class Snapshots:
    "`on_eval` that keeps the weights after each evaluation."
    def __init__(self, model): self.model, self.weights = model, []
    def __call__(self, history): self.weights.append(T._tensors(self.model))

def same(a, b): return all(torch.equal(a[k], b[k]) for k in a)

def test_fit_keeps_the_best_dev_weights(monkeypatch, model, tok, target, dev):
    scripted_dev(monkeypatch, [0.2, 0.9, 0.4])
    snaps = Snapshots(model)
    res = T.fit(model, tok, LABELS, target, dev, cfg=cfg(epochs=3), on_eval=snaps)
    assert [h['dev_macro_f1'] for h in res.history] == [0.2, 0.9, 0.4]
    assert res.best_epoch == 1 and res.best_dev_macro_f1 == 0.9
    assert same(T._tensors(model), snaps.weights[1]) and not same(snaps.weights[1], snaps.weights[2])

def test_fit_stops_after_patience_evaluations_without_gain(monkeypatch, model, tok, target, dev):
    scripted_dev(monkeypatch, [0.5, 0.5, 0.4, 0.6])
    res = T.fit(model, tok, LABELS, target, dev, cfg=cfg(epochs=6, patience=2))
    assert res.stopped_early and len(res.history) == 3 and res.steps == 3 and res.best_epoch == 0

def test_fit_trains_min_steps_and_evaluates_every_eval_steps(monkeypatch, model, tok, target, dev):
    res = T.fit(model, tok, LABELS, target, dev, cfg=cfg(epochs=1, min_steps=6, eval_steps=2))
    assert res.steps == 6 and [h['step'] for h in res.history] == [2, 4, 6]

def test_keep_start_returns_the_given_weights_when_training_never_beats_them(monkeypatch, model, tok, target, dev):
    start = T._tensors(model)
    scripted_dev(monkeypatch, [0.8, 0.7, 0.75])
    res = T.fit(model, tok, LABELS, target, dev, cfg=cfg(epochs=2), keep_start=True)
    assert res.best_epoch == -1 and res.history[0]['epoch'] == -1 and same(T._tensors(model), start)
    scripted_dev(monkeypatch, [0.8, 0.9])   # a stage that beats its start keeps the trained weights
    res = T.fit(model, tok, LABELS, target, dev, cfg=cfg(epochs=1), keep_start=True)
    assert res.best_epoch == 0 and not same(T._tensors(model), start)

def test_layer_wise_rates_and_weight_decay_groups(small_model):
    depths = T.layer_depths(small_model)
    assert depths['bert.embeddings.word_embeddings.weight'] == 0 and depths['bert.encoder.layer.1.output.dense.weight'] == 2
    assert depths['classifier.weight'] == 3
    groups = T.param_groups(small_model, cfg(lr=1e-3, layer_lr_decay=0.5, weight_decay=0.1), unfreeze_every=4)
    of = {id(p): g for g in groups for p in g['params']}
    params = dict(small_model.named_parameters())
    head, emb = of[id(params['classifier.weight'])], of[id(params['bert.embeddings.word_embeddings.weight'])]
    assert head['lr'] == 1e-3 and emb['lr'] == pytest.approx(1e-3 * 0.5 ** 3)
    assert head['start_step'] == 0 and emb['start_step'] == 12
    assert head['weight_decay'] == 0.1 and of[id(params['classifier.bias'])]['weight_decay'] == 0.0
    assert sum(len(g['params']) for g in groups) == len(params)

def test_fit_applies_layer_wise_rates(tok, small_model, target, dev):
    "With a steep decay the embeddings move far less than the head; without it, not."
    def moves(decay):
        m = copy.deepcopy(small_model)
        before = T._tensors(m)
        T.fit(m, tok, LABELS, target, dev, cfg=cfg(epochs=2, layer_lr_decay=decay, weight_decay=0.0))
        after = T._tensors(m)
        step = lambda k: (after[k] - before[k]).abs().max().item()
        return step('bert.embeddings.LayerNorm.weight') / step('classifier.bias')
    assert moves(0.01) < 1e-4 < moves(1.0)

def test_gradual_unfreezing_leaves_lower_layers_alone(monkeypatch, tok, small_model, target, dev):
    scripted_dev(monkeypatch, [0.1, 0.2])   # the last weights are the best
    m = copy.deepcopy(small_model)
    before = T._tensors(m)
    # one step per epoch, a layer unfrozen per epoch: after 2 epochs the head and block 2 moved, the embeddings did not
    T.fit(m, tok, LABELS, target, dev, cfg=cfg(epochs=2, unfreeze_epochs=1.0))
    after = T._tensors(m)
    moved = lambda prefix: any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))
    assert moved('classifier.') and moved('bert.encoder.layer.1.')
    assert not moved('bert.encoder.layer.0.') and not moved('bert.embeddings.')

def test_gradients_are_clipped_to_max_grad_norm(monkeypatch, model, tok, target, dev):
    seen = []
    clip = Accelerator.clip_grad_norm_
    def spy(acc, params, max_norm, **kw):
        params = list(params); seen.append((len(params), max_norm))
        return clip(acc, params, max_norm, **kw)
    monkeypatch.setattr(Accelerator, 'clip_grad_norm_', spy)
    T.fit(model, tok, LABELS, target, dev, cfg=cfg(epochs=2, max_grad_norm=0.5))
    assert seen == [(len(list(model.parameters())), 0.5)] * 2

def test_resume_equals_an_uninterrupted_run(tok, small_model, target, source, dev, tmp_path):
    c = cfg(epochs=3, alpha=0.5, alpha_schedule='ganin')
    whole = copy.deepcopy(small_model)
    T.fit(whole, tok, LABELS, target, dev, source=source, cfg=c)
    class Stop(Exception): pass
    def stop_after_one(history):
        if len(history) == 1: raise Stop
    cut = copy.deepcopy(small_model)
    with pytest.raises(Stop): T.fit(cut, tok, LABELS, target, dev, source=source, cfg=c, out_dir=tmp_path, on_eval=stop_after_one)
    again = copy.deepcopy(small_model)   # a fresh process would load the model anew
    res = T.fit(again, tok, LABELS, target, dev, source=source, cfg=c, out_dir=tmp_path, resume=True)
    assert len(res.history) == 3 and same(T._tensors(again), T._tensors(whole))
    with pytest.raises(T.CheckpointError, match='different run'):
        T.fit(copy.deepcopy(small_model), tok, LABELS, target, dev, source=source, cfg=cfg(epochs=3), out_dir=tmp_path, resume=True)
