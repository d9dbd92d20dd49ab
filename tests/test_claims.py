"""Claim tests: each one fails when the mechanism it guards is removed, weakened or reversed.

Small and deterministic: the default encoder cut to its first two blocks with dropout off, a few real
sentences, fixed seeds. `make test-claims` runs them; `make mutate` checks that they kill mutants of
the library (results/mutation/).
"""
import copy, dataclasses, json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator

from xdt_nb import adversarial as A, evaluate as E, objective as O, train as T, transfer as X
# the modules the methods live in, where a stand-in must replace what they look up
from xdt_nb import finetune as FT, label_shift as LS, lexicon as LX, registry as R
from xdt_nb import inject as KI   # registers the knowledge-injection methods
from xdt_nb.data import hash_split, label_space, load_domain
from xdt_nb.model import load_classifier, load_tokenizer

LABELS = list(label_space('sentiment'))
K = len(LABELS)

# ---------------------------------------------------------------------------------------------------
# fixtures: a small real encoder and real sentences

@pytest.fixture(scope='session')
def tok(): return load_tokenizer()

def set_dropout(model, p:float):
    "Every dropout layer of `model` at rate `p`."
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout): mod.p = p
    return model

@pytest.fixture(scope='session')
def small_model():
    "MiniLM-L6 cut to its first two blocks, dropout off: a step's logits depend on the weights and batch alone."
    m = load_classifier(LABELS, seed=0)
    m.bert.encoder.layer = m.bert.encoder.layer[:2]
    m.config.num_hidden_layers = 2
    return set_dropout(m, 0.0)

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

class StepGrads:
    "Records the gradients each optimiser step sees, once all of its batches are back-propagated."
    def __init__(self, monkeypatch):
        self.steps = []
        step = T.optimiser_step
        def spy(run, step_no):
            named = run.acc.unwrap_model(run.model).named_parameters()
            self.steps.append({n: q.grad.detach().clone() for n, q in named if q.grad is not None})
            return step(run, step_no)
        monkeypatch.setattr(T, 'optimiser_step', spy)

def test_two_accumulated_batches_of_8_are_one_batch_of_16(monkeypatch, tok, small_model, dev):
    "accumulation_steps=2 with batches of 8: one optimiser step, with the gradient of the mean loss over all 16 rows."
    rows, spy = _sample('tweets', 'train', 16), StepGrads(monkeypatch)
    T.fit(copy.deepcopy(small_model), tok, LABELS, rows, dev, cfg=cfg(batch_size=16))
    T.fit(copy.deepcopy(small_model), tok, LABELS, rows, dev, cfg=cfg(batch_size=8, accumulation_steps=2))
    assert len(spy.steps) == 2   # one step each
    whole, accumulated = spy.steps
    assert whole.keys() == accumulated.keys()
    # the same sums in another order and padding: float32 rounding apart
    for n in whole: torch.testing.assert_close(accumulated[n], whole[n], rtol=1e-4, atol=1e-6)

def test_mixed_precision_runs_the_forward_pass_in_bf16(tok, small_model, target, dev):
    "mixed_precision='bf16' trains under bf16 autocast, 'no' in float32, one after the other in one process; fit hands the model back in float32."
    def dtypes(model, precision):
        seen = set()
        hook = model.bert.encoder.layer[0].intermediate.dense.register_forward_hook(lambda m, a, out: seen.add(out.dtype))
        if precision is None: model(**tok(['fine'], return_tensors='pt'))   # a plain forward pass, after fit
        else: T.fit(model, tok, LABELS, target, dev, cfg=cfg(mixed_precision=precision))
        hook.remove()
        return seen
    model = copy.deepcopy(small_model)
    assert dtypes(copy.deepcopy(small_model), 'no') == {torch.float32}
    assert dtypes(model, 'bf16') == {torch.bfloat16}
    assert dtypes(model, None) == {torch.float32} and model.classifier.weight.dtype == torch.float32
    assert dtypes(copy.deepcopy(small_model), 'no') == {torch.float32}

def test_resume_equals_an_uninterrupted_run(monkeypatch, tok, small_model, target, source, dev, tmp_path):
    "Stopped after an epoch and resumed from the checkpoint: the very weights of a run never stopped (dropout on: RNG too)."
    scripted_dev(monkeypatch, range(100))   # every evaluation the best: the last weights are returned
    c = cfg(epochs=3, alpha=0.5, alpha_schedule='ganin')
    small_model = set_dropout(copy.deepcopy(small_model), 0.1)
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

def no_data_task(labels=LABELS, **cfg_kw):
    "A task with a label space and a config but no rows: for methods that learn nothing from data."
    return X.TransferTask(list(labels), None, None, None, None, cfg(**cfg_kw))

# ---------------------------------------------------------------------------------------------------
# every method of the registry: what it starts from, which rows and weights it uses, what it returns

class FitLog:
    "Stands in for `finetune.fit`: records each call (rows, config, model object) and nudges the head, trains nothing."
    def __init__(self, monkeypatch, dev_scores=None):
        self.calls, self.dev_scores = [], dev_scores or {}
        monkeypatch.setattr(FT, 'fit', self)

    def trace(self, train, source) -> torch.Tensor:
        "What a stage adds to the head's bias: the same for every stage."
        return torch.tensor([0.0, 0.1, 0.2])

    def __call__(self, model, tok, labels, train=None, dev=None, source=None, cfg=None, out_dir=None, resume=False,
                 keep_start=False, unlabelled=None):
        self.calls.append(dict(model=model, train=train, dev=dev, source=source, cfg=cfg, keep_start=keep_start,
                               unlabelled=unlabelled, out_dir=out_dir))
        with torch.no_grad(): model.classifier.bias += self.trace(train, source)  # a trace of this stage
        if out_dir is not None:   # a checkpoint, as `fit` leaves one
            (Path(out_dir)/'checkpoint').mkdir(parents=True, exist_ok=True)
            (Path(out_dir)/'checkpoint/state.pt').write_bytes(b'')
        score = self.dev_scores.get(cfg.alpha, 0.5)
        self.calls[-1]['result'] = T.FitResult([dict(epoch=0, dev_macro_f1=score)], score, 0, 1, 1.23, False)
        return self.calls[-1]['result']

@pytest.fixture
def task(monkeypatch, small_model, tok):
    "A transfer task on real rows: 8 tweets labelled, 12 for dev, nyt as the source, 40 unlabelled tweets."
    monkeypatch.setattr(R.TransferTask, 'new_model', lambda self: (copy.deepcopy(small_model), tok))
    unlabelled = _sample('tweets', 'train', 40, seed=1)
    return X.TransferTask(LABELS, _sample('tweets', 'train', 8), _sample('tweets', 'dev', 12), _sample('nyt', 'train', 8),
                          _sample('nyt', 'dev', 12), cfg(alpha=0.4), unlabelled=unlabelled.drop(columns='label'))

def test_target_only(monkeypatch, task):
    log = FitLog(monkeypatch)
    X.target_only(task)
    (c,) = log.calls
    assert c['train'] is task.target_train and c['dev'] is task.target_dev and c['source'] is None and c['cfg'].alpha == 0

def test_source_only_uses_no_target_rows_and_is_reused(monkeypatch, task):
    log = FitLog(monkeypatch)
    cached = dataclasses.replace(task, models=R.ModelCache())
    first = X.source_only(cached)
    (c,) = log.calls
    assert c['train'] is None and c['source'] is task.source_train and c['dev'] is task.source_dev
    again = X.source_only(cached)   # same rows, same config, a cache: the same model, not trained again
    assert len(log.calls) == 1 and again.model is not first.model and same(T._tensors(again.model), T._tensors(first.model))
    X.source_only(dataclasses.replace(cached, source_train=task.source_train.iloc[:6]))
    assert len(log.calls) == 2
    X.source_only(task)   # no cache: trained
    assert len(log.calls) == 3

def test_sequential_trains_on_from_the_source_model(monkeypatch, task):
    log = FitLog(monkeypatch)
    out = X.sequential(task)
    s, t = log.calls
    assert s['source'] is task.source_train and s['train'] is None and s['dev'] is task.source_dev
    assert t['model'] is s['model'] is out.model        # the target stage starts from the source stage's weights
    assert t['train'] is task.target_train and t['dev'] is task.target_dev and t['source'] is None
    assert t['keep_start'] and t['cfg'].alpha == 0 and len(out.fits) == 2

def test_joint_uses_both_label_sets_with_alpha(monkeypatch, task):
    log = FitLog(monkeypatch)
    X.joint(task)
    X.joint(dataclasses.replace(task, cfg=dataclasses.replace(task.cfg, alpha=0.0)))
    a, b = log.calls
    assert a['train'] is task.target_train and a['source'] is task.source_train and a['dev'] is task.target_dev
    assert a['cfg'].alpha == 0.4 and b['cfg'].alpha == 1.0    # alpha = 0 would be target-only: joint uses 1

def test_joint_select_keeps_the_alpha_best_on_target_dev(monkeypatch, task):
    log = FitLog(monkeypatch, dev_scores={0.1: 0.5, 0.3: 0.7, 1.0: 0.6})
    out = X.joint_select(task)
    assert [c['cfg'].alpha for c in log.calls] == list(X.ALPHA_GRID)
    assert out.info['alpha'] == 0.3 and out.model is log.calls[1]['model']
    assert all(c['dev'] is task.target_dev for c in log.calls)

def test_dann_adds_the_adversarial_term_on_target_text(monkeypatch, task):
    log = FitLog(monkeypatch)
    X.dann(task)
    X.dann(dataclasses.replace(task, target_train=task.target_train.iloc[:0]))
    a, b = log.calls
    assert a['cfg'].adversarial > 0 and a['cfg'].alpha == 0.4 and a['unlabelled'] is task.unlabelled
    assert a['train'] is task.target_train and a['dev'] is task.target_dev and a['source'] is task.source_train
    assert b['train'] is None and b['dev'] is task.source_dev   # no target labels: choose on source dev

def test_self_train_labels_the_teachers_most_confident_target_texts(monkeypatch, task):
    log = FitLog(monkeypatch)
    out = X.self_train(task)
    student = log.calls[-1]
    assert len(log.calls) == 3 and student['model'] is log.calls[1]['model'] and student['keep_start']
    rows = student['train']
    pseudo = rows.iloc[len(task.target_train):]
    assert rows.iloc[:len(task.target_train)].equals(task.target_train[['text', 'label']].reset_index(drop=True))
    pool = task.unlabelled[~task.unlabelled.text.isin(task.target_train.text)]
    assert set(pseudo.text) <= set(pool.text)
    # the teacher is the model after the two sequential stages, before the student's stage nudged it
    teacher = copy.deepcopy(out.model)
    with torch.no_grad(): teacher.classifier.bias -= torch.tensor([0.0, 0.1, 0.2])
    proba = E.predict_proba(teacher, task.new_model()[1], pool.text.tolist())
    keep = X.confident_rows(proba, X.SELF_TRAIN_SHARE)
    assert sorted(pseudo.text) == sorted(pool.text.iloc[keep])
    assert dict(zip(pseudo.text, pseudo.label)) == {pool.text.iloc[i]: LABELS[proba[i].argmax()] for i in keep}

def test_confident_rows():
    p = np.array([[.9, .1, 0], [.6, .4, 0], [.2, .8, 0], [.7, .3, 0], [.1, .9, 0]])
    assert X.confident_rows(p, 0.5).tolist() == [0, 3, 4]   # per class, rounded up: 2 of 3, 1 of 2
    assert X.confident_rows(p, 1.0).tolist() == [0, 3, 1, 4, 2]

def test_linear_probe_is_a_balanced_logistic_regression_on_frozen_vectors(monkeypatch, task):
    from sklearn.linear_model import LogisticRegression
    vectors = {t: np.r_[np.random.default_rng(len(t)).normal(size=4), i % 3] for i, t in
               enumerate([*task.source_train.text, *task.target_dev.text])}
    monkeypatch.setattr('xdt_nb.model.embed', lambda texts, name=None: np.array([vectors[t] for t in texts]))
    src = pd.concat([task.source_train] + [task.source_train[task.source_train.label == 'negative']] * 3)
    out = X.linear_probe(dataclasses.replace(task, source_train=src))
    clf = LogisticRegression(max_iter=2000, class_weight='balanced').fit(
        np.array([vectors[t] for t in src.text]), T.label_ids(src.label, LABELS))
    texts = task.target_dev.text.tolist()
    assert np.allclose(out.predict_proba(texts), clf.predict_proba(np.array([vectors[t] for t in texts])))

def test_vader_rule_thresholds(monkeypatch):
    compound = np.array([0.05, 0.049, -0.05, -0.049, 0.0, 0.9])
    monkeypatch.setattr(LX, 'vader_scores', lambda texts: np.c_[np.zeros((6, 3)), compound])
    assert X.vader_classes(['x'] * 6).tolist() == [2, 1, 0, 1, 1, 2]
    proba = X.vader_lexicon(no_data_task()).predict_proba(['x'] * 6)
    assert np.array_equal(proba, np.eye(3)[[2, 1, 0, 1, 1, 2]])

def test_vader_scores_are_vaders():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    s = SentimentIntensityAnalyzer().polarity_scores('What a great, lovely day!')
    assert X.vader_scores(['What a great, lovely day!']).tolist() == [[s['neg'], s['neu'], s['pos'], s['compound']]]

def test_lm_lexicon_counts_positive_minus_negative_words(monkeypatch):
    monkeypatch.setattr(LX, '_lm_word_lists', lambda: ({'GAIN', 'PROFIT'}, {'LOSS'}))
    out = X.lm_lexicon(no_data_task())
    texts = ['Gain and profit, then a loss.', 'A loss.', 'Nothing here.', 'gain LOSS']
    assert out.predict_proba(texts).argmax(1).tolist() == [2, 0, 1, 1]

def test_lexicons_refuse_other_label_spaces():
    t = no_data_task(['a', 'b'])
    for method in (X.vader_lexicon, X.lm_lexicon):
        with pytest.raises(ValueError, match='negative/neutral/positive'): method(t)

def test_em_priors_recovers_shifted_priors():
    "Saerens et al.: posteriors calibrated to uniform priors, on a sample drawn with other priors."
    rng = np.random.default_rng(0)
    true = np.array([0.6, 0.3, 0.1])
    y = rng.choice(3, size=20000, p=true)
    means = np.eye(3) * 2.0
    x = means[y] + rng.normal(size=(20000, 3))
    lik = np.exp(-0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1))
    proba = lik / lik.sum(1, keepdims=True)       # the Bayes posterior under uniform priors
    assert np.abs(X.em_priors(proba, np.ones(3) / 3) - true).max() < 0.02
    assert np.abs(proba.mean(0) - true).max() > 0.05   # the plain mean is biased: EM is doing the work

def test_shift_priors():
    p = np.array([[0.5, 0.5], [0.2, 0.8]])
    q = X.shift_priors(p, np.array([0.5, 0.5]), np.array([0.75, 0.25]))
    assert np.allclose(q, [[0.75, 0.25], [0.2 * 3 / (0.6 + 0.8), 0.8 / (0.6 + 0.8)]])

def test_calibration_fits_temperature_and_bias():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    logits = np.eye(3)[y] * 1.0 + rng.normal(size=(3000, 3))
    over = O.softmax(logits * 4 + np.array([1.0, 0, 0]))   # over-confident and biased towards class 0
    nll = lambda p: -np.log(p[np.arange(len(y)), y]).mean()
    cal = X.fit_calibration(over, y)
    assert cal.temperature > 2 and cal.bias[0] < cal.bias[1] - 0.2 and nll(cal(over)) < nll(over) - 0.1
    temp_only = X.fit_calibration(over, y, bias=False)
    assert np.array_equal(temp_only(over).argmax(1), over.argmax(1)) and temp_only.temperature > 2

def test_label_shift_em_reweights_the_calibrated_source_model(monkeypatch, task):
    FitLog(monkeypatch)
    out = X.label_shift_em(task)
    texts = task.unlabelled.text.tolist()
    raw = out.predict_proba(texts)
    y = T.label_ids(task.source_dev.label, LABELS)
    cal = X.fit_calibration(out.predict_proba(task.source_dev.text.tolist()), y)
    src_priors = (np.bincount(y, minlength=3) + 1) / (len(y) + 3)
    predict, facts = out.for_target(texts)
    priors = X.em_priors(cal(raw), src_priors)
    assert np.allclose(predict(texts), X.shift_priors(cal(raw), src_priors, priors), atol=1e-6)
    assert list(facts['estimated_priors'].values()) == priors.round(4).tolist()

def test_lexicon_ensemble_averages_two_calibrated_experts(monkeypatch, task):
    FitLog(monkeypatch)
    out = X.lexicon_ensemble(task)
    texts = task.target_dev.text.tolist()
    model = out.model
    raw = E.predict_proba(model, task.new_model()[1], texts)
    cal = X.fit_calibration(E.predict_proba(model, task.new_model()[1], task.source_dev.text.tolist()),
                            T.label_ids(task.source_dev.label, LABELS))
    lexicon = LX._lexicon_expert(task.source_dev, LABELS)(texts)
    assert np.allclose(out.predict_proba(texts), 0.5 * cal(raw) + 0.5 * lexicon, atol=1e-6)

def test_sequential_lexicon_mixes_with_the_weight_best_on_target_dev(monkeypatch, task):
    FitLog(monkeypatch)
    out = X.sequential_lexicon(task)
    scores, w = out.info['dev_macro_f1_by_weight'], out.info['model_weight']
    assert w == X.MODEL_WEIGHTS[int(np.argmax(scores))]   # the first best: ties go to the model
    texts = task.target_dev.text.tolist()
    raw = E.predict_proba(out.model, task.new_model()[1], texts)
    cal = X.fit_calibration(raw, T.label_ids(task.target_dev.label, LABELS), bias=False)
    lexicon = LX._lexicon_expert(task.target_train, LABELS)(texts)
    assert np.allclose(out.predict_proba(texts), w * cal(raw) + (1 - w) * lexicon, atol=1e-6)
    dev_y = T.label_ids(task.target_dev.label, LABELS)
    assert scores == [round(T.macro_f1(dev_y, (v * cal(raw) + (1 - v) * lexicon).argmax(1), 3), 4) for v in X.MODEL_WEIGHTS]

def test_every_registered_method_has_a_claim_test():
    "A method added to the registry needs a claim test here too."
    tests = dict(target_only=test_target_only, source_only=test_source_only_uses_no_target_rows_and_is_reused,
                 sequential=test_sequential_trains_on_from_the_source_model, joint=test_joint_uses_both_label_sets_with_alpha,
                 joint_select=test_joint_select_keeps_the_alpha_best_on_target_dev,
                 dann=test_dann_adds_the_adversarial_term_on_target_text,
                 self_train=test_self_train_labels_the_teachers_most_confident_target_texts,
                 linear_probe=test_linear_probe_is_a_balanced_logistic_regression_on_frozen_vectors,
                 vader_lexicon=test_vader_rule_thresholds, lm_lexicon=test_lm_lexicon_counts_positive_minus_negative_words,
                 label_shift_em=test_label_shift_em_reweights_the_calibrated_source_model,
                 lexicon_ensemble=test_lexicon_ensemble_averages_two_calibrated_experts,
                 sequential_lexicon=test_sequential_lexicon_mixes_with_the_weight_best_on_target_dev,
                 knowledge_text=test_knowledge_text_writes_the_concepts_before_the_review,
                 knowledge_type=test_knowledge_type_adds_one_learned_vector_per_category,
                 knowledge_graph=test_knowledge_graph_changes_only_the_linked_reviews,
                 graph_shuffled=test_graph_shuffled_permutes_the_graph_vectors,
                 graph_random=test_graph_random_keeps_only_the_graph_statistics,
                 graph_random_links=test_graph_random_links_moves_the_mentions_to_other_concepts,
                 sequential_graph=test_sequential_graph_goes_on_from_the_source_model,
                 sequential_graph_shuffled=test_sequential_graph_shuffled_differs_from_it_by_the_vectors_alone)
    assert set(X.METHODS) == set(tests), set(X.METHODS) ^ set(tests)

# ---------------------------------------------------------------------------------------------------
# samplers and splits

def test_few_shot_is_stratified_exact_and_fixed_by_the_seed():
    df = load_domain('tweets', 'train')
    a, b, c = X.few_shot(df, 64, 0), X.few_shot(df, 64, 0), X.few_shot(df, 64, 1)
    assert len(a) == 64 and a.equals(b) and not set(a.text) == set(c.text)
    assert set(a.text) <= set(df.text)
    share, expect = a.label.value_counts(), df.label.value_counts(normalize=True) * 64
    assert ((share - expect).abs() <= 1).all()   # each class within one row of its share
    assert X.few_shot(df, 3, 0).label.nunique() == 3 and len(X.few_shot(df, 0, 0)) == 0
    assert len(X.few_shot(df, None, 0)) == len(df)

def test_hash_splits_are_fixed_disjoint_and_in_proportion():
    keys = [f'sentence {i}' for i in range(5000)]
    s = hash_split(keys)
    assert (s == hash_split(keys[::-1])[::-1]).all()   # a row's split depends on its key alone
    share = pd.Series(s).value_counts(normalize=True)
    assert abs(share['train'] - 0.7) < 0.02 and abs(share['dev'] - 0.1) < 0.02 and abs(share['test'] - 0.2) < 0.02
    assert (hash_split(keys, salt='other') != s).mean() > 0.3

def test_domain_splits_are_disjoint():
    df = load_domain('tweets')
    texts = {sp: set(df.text[df.split == sp]) for sp in ('train', 'dev', 'test')}
    assert not (texts['train'] & texts['dev'] or texts['train'] & texts['test'] or texts['dev'] & texts['test'])

def test_source_rows_share_the_cap_and_target_test_ignores_the_seed():
    two = X.source_rows('movie+nyt', 'train', 100, seed=0)
    assert len(two) == 100 and (two.domain.value_counts() == 50).all()
    assert X.target_test('tweets', 50).equals(X.target_test('tweets', 50))
    assert len(X.target_test('tweets', 50)) == 50 and len(X.target_test('tweets')) == len(load_domain('tweets', 'test'))

# ---------------------------------------------------------------------------------------------------
# metrics, checked against a confusion matrix by hand

def test_metrics_against_a_hand_computed_confusion_matrix():
    y_true = ['a'] * 4 + ['b'] * 3 + ['c'] * 3
    y_pred = ['a', 'a', 'a', 'b', 'b', 'b', 'c', 'a', 'c', 'c']
    m = E.classification_metrics(y_true, y_pred, ['a', 'b', 'c'])
    assert m['confusion'] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    # precision a 3/4, b 2/3, c 2/3; recall a 3/4, b 2/3, c 2/3
    f1 = {'a': 0.75, 'b': 2 / 3, 'c': 2 / 3}
    assert m['accuracy'] == pytest.approx(0.7)
    assert m['macro_f1'] == pytest.approx(sum(f1.values()) / 3)
    assert m['weighted_f1'] == pytest.approx((4 * 0.75 + 3 * 2 / 3 + 3 * 2 / 3) / 10)
    assert m['per_class']['a']['precision'] == pytest.approx(0.75) and m['per_class']['c']['support'] == 3
    assert T.macro_f1([0, 0, 1], [0, 0, 0], 3) == pytest.approx((0.8 + 0 + 0) / 3)   # absent classes count as 0

def test_majority_baseline_and_label_free_scores():
    m = E.majority_baseline(['a', 'b', 'b'], ['a', 'b', 'b', 'b'], ['a', 'b'])
    assert m['predicted'] == 'b' and m['accuracy'] == 0.75
    s = X.label_free_scores(np.array([[.9, .1, 0], [.2, .3, .5], [.4, .6, 0]]), np.array([0, 1, 1]))
    assert s['lexicon_agreement'] == pytest.approx(2 / 3) and s['mean_confidence'] == pytest.approx((.9 + .5 + .6) / 3)

# ---------------------------------------------------------------------------------------------------
# run_experiment: the rows it hands a method, the record it leaves, what it writes

@pytest.fixture
def experiment(monkeypatch, small_model, tok, tmp_path):
    "run_experiment on real domains with `fit` recorded, not run; its FitLog and a records path."
    monkeypatch.setattr(R.TransferTask, 'new_model', lambda self: (copy.deepcopy(small_model), tok))
    log = FitLog(monkeypatch)
    kw = dict(source='nyt', n_target_labels=8, seed=1, cfg=cfg(alpha=0.4), max_source=10, max_dev=12, max_test=20,
              out_dir=tmp_path/'run', records=tmp_path/'records.jsonl')
    return lambda method='joint', **over: (X.run_experiment('tweets', method, **(kw | over)), log)

def test_run_experiment_hands_the_method_the_sampled_rows(experiment):
    res, log = experiment(dev_labels=6)
    (c,) = log.calls
    tweets, nyt = load_domain('tweets'), load_domain('nyt')
    assert len(c['train']) == 8 and set(c['train'].text) <= set(tweets.text[tweets.split == 'train'])
    assert c['train'].label.nunique() == 3 and c['train'].equals(X.few_shot(tweets[tweets.split == 'train'].reset_index(drop=True), 8, 1))
    assert len(c['dev']) == 6 and set(c['dev'].text) <= set(tweets.text[tweets.split == 'dev'])
    assert len(c['source']) == 10 and set(c['source'].text) <= set(nyt.text[nyt.split == 'train'])
    assert c['cfg'].seed == 1 and c['cfg'].alpha == 0.4 and c['cfg'].lr == 1e-4

def test_run_experiment_record_and_metrics(experiment, tmp_path, tok):
    res, log = experiment()
    rec = res.record
    test = X.target_test('tweets', 20)
    proba = E.predict_proba(res.model, tok, test.text.tolist())
    expect = E.classification_metrics(test.label, [LABELS[i] for i in proba.argmax(1)], LABELS)
    assert rec['macro_f1'] == expect['macro_f1'] and rec['accuracy'] == expect['accuracy'] and rec['weighted_f1'] == expect['weighted_f1']
    assert res.metrics['confusion'] == expect['confusion']
    assert (rec['source'], rec['target'], rec['dataset'], rec['method'], rec['seed']) == ('nyt', 'tweets', 'tweets', 'joint', 1)
    assert (rec['n_target_labels'], rec['n_source'], rec['n_dev'], rec['n_test']) == (8, 10, 12, 20)
    assert rec['config']['alpha'] == 0.4 and rec['epochs'] == [1] and rec['best_epochs'] == [0] and rec['task'] == 'sentiment'
    (saved,) = E.read_records(tmp_path/'records.jsonl').to_dict('records')
    assert saved['macro_f1'] == rec['macro_f1'] and saved['method'] == 'joint'
    m = json.loads((tmp_path/'run/metrics.json').read_text())
    assert m['macro_f1'] == rec['macro_f1'] and m['record']['seed'] == 1 and (tmp_path/'run/confusion.png').stat().st_size > 0

def test_run_experiment_tests_other_targets_with_the_same_model(experiment, tmp_path):
    res, log = experiment('source_only', n_target_labels=0, also_test_on=['movie'])
    assert len(log.calls) == 1 and len(res.other_records) == 1
    other = res.other_records[0]
    assert other['target'] == 'movie' and other['n_test'] == 20 and other['source'] == 'nyt'
    assert len(E.read_records(tmp_path/'records.jsonl')) == 2 and (tmp_path/'run/test_movie/metrics.json').exists()
    with pytest.raises(ValueError, match='learns from its target'): experiment('joint', also_test_on=['movie'])

def test_run_experiment_refuses_what_cannot_run(experiment):
    with pytest.raises(KeyError, match='Unknown method'): experiment('no_such_method')
    with pytest.raises(ValueError, match='needs a source'): experiment('joint', source=None)
    with pytest.raises(ValueError, match='needs target labels'): experiment('joint', n_target_labels=0)
    with pytest.raises(ValueError, match='dev_labels'): experiment(dev_labels=0)
    with pytest.raises(ValueError, match='different tasks'): experiment(source='bbc-news')

def test_run_experiment_label_free_scores(experiment):
    res, _ = experiment('vader_lexicon', source=None, n_target_labels=0, label_free=15)
    assert res.record['n_label_free'] == 15 and res.record['lexicon_agreement'] == 1.0   # the lexicon agrees with itself

def test_run_experiment_multi_source_shares_the_cap(experiment):
    res, log = experiment(source='movie+amazon')
    assert res.record['source'] == 'movie+amazon' and log.calls[0]['source'].text.isin(load_domain('movie').text).sum() == 5

# ---------------------------------------------------------------------------------------------------
# saved models and predict

def test_saved_model_predicts_what_the_model_predicts(small_model, tok, tmp_path):
    path = X.save_model(small_model, tok, tmp_path/'m', dict(method='joint'))
    texts = ['I love it.', 'This is awful.', 'It is a table.']
    out = X.predict(path, texts)
    proba = E.predict_proba(small_model, tok, texts)
    assert out.label.tolist() == [LABELS[i] for i in proba.argmax(1)] and list(out.columns) == ['text', 'label', *[f'p_{l}' for l in LABELS]]
    assert np.allclose(out[[f'p_{l}' for l in LABELS]].to_numpy(), proba.round(4))
    assert json.loads((path/'xdt_record.json').read_text()) == dict(method='joint')
    pd.DataFrame(dict(review=texts)).to_csv(tmp_path/'in.csv', index=False)
    counts = X.predict_file(path, tmp_path/'in.csv', tmp_path/'out/pred.csv', text_col='review')
    assert pd.read_csv(tmp_path/'out/pred.csv').label.tolist() == out.label.tolist()
    assert counts.to_dict() == out.label.value_counts().to_dict()
    with pytest.raises(ValueError, match='empty or non-string'): X.predict(path, ['fine', ' '])
    with pytest.raises(FileNotFoundError, match='not a saved model'): X.load_model(tmp_path)

def test_predict_file_streams_a_chunk_at_a_time(small_model, tok, tmp_path, monkeypatch):
    "The model sees `chunk_rows` rows at a time, and the file written is the one written in one go."
    path = X.save_model(small_model, tok, tmp_path/'m')
    texts = [f'Review number {i}: {"great" if i % 2 else "awful"}.' for i in range(5)]
    pd.DataFrame(dict(text=texts)).to_csv(tmp_path/'in.csv', index=False)
    X.predict_file(path, tmp_path/'in.csv', tmp_path/'whole.csv')
    seen = []
    label_texts = X.label_texts
    def counted(model, tok, labels, texts, *a):
        seen.append(len(texts))
        return label_texts(model, tok, labels, texts, *a)
    monkeypatch.setattr(X, 'label_texts', counted)
    counts = X.predict_file(path, tmp_path/'in.csv', tmp_path/'chunked.csv', chunk_rows=2)
    assert seen == [2, 2, 1]
    assert (tmp_path/'chunked.csv').read_bytes() == (tmp_path/'whole.csv').read_bytes()
    assert counts.sum() == 5 and sorted(p.name for p in tmp_path.iterdir()) == ['chunked.csv', 'in.csv', 'm',
                                                                               'whole.csv']

def test_new_model_heads_are_seeded():
    t = lambda seed: no_data_task(seed=seed)
    a, b, c = (x.new_model()[0].classifier.weight for x in (t(0), t(0), t(1)))
    assert torch.equal(a, b) and not torch.equal(a, c)

def test_domain_classifier_loss_is_binary_cross_entropy():
    head = A.DomainClassifier(4, width=8).eval()   # no dropout: two passes give the same logits
    f, d = torch.randn(6, 4), torch.tensor([0, 1, 0, 1, 1, 0])
    p = torch.sigmoid(head(f))
    assert head.loss(f, d).item() == pytest.approx(-(d * p.log() + (1 - d) * (1 - p).log()).mean().item(), rel=1e-5)

def test_lm_word_lists_are_the_dictionary():
    pos, neg = LX._lm_word_lists()
    assert {'GAIN', 'PROFITABLE'} <= pos and {'LOSS', 'DECLINE'} <= neg and not pos & neg and len(pos) > 300

# ---------------------------------------------------------------------------------------------------
# records, tables and figures: built from the records, every number traceable

def records_frame():
    "Six hand-made records: two methods, two pairs, seeds 0 and 1."
    rows = [('tweets', 'nyt', 'sequential', 0, .70), ('tweets', 'nyt', 'sequential', 1, .80), ('nyt', 'nyt', 'target_only', 0, .75),
            ('nyt', 'nyt', 'target_only', 1, .75), ('movie', 'nyt', 'sequential', 0, .60), ('movie', 'nyt', 'sequential', 1, .70)]
    return pd.DataFrame([dict(source=s, target=t, method=m, seed=sd, macro_f1=f, weighted_f1=f + .01, accuracy=f + .02,
                              n_target_labels=64) for s, t, m, sd, f in rows])

def test_summarise_and_mean_std():
    s = E.summarise(records_frame(), by=('source', 'method'))
    row = s[(s.source == 'tweets')].iloc[0]
    assert row.macro_f1_mean == pytest.approx(.75) and row.macro_f1_std == pytest.approx(np.std([.7, .8], ddof=1))
    assert row.macro_f1_count == 2 and len(s) == 3 and s.source.tolist() == ['tweets', 'nyt', 'movie']   # first-seen order
    assert E.mean_std(s).tolist() == ['0.750 ± 0.071', '0.750 ± 0.000', '0.650 ± 0.071']
    one = E.summarise(records_frame().iloc[:1].assign(source=None), by=('source', 'method'))
    assert one.source.tolist() == ['-'] and E.mean_std(one, digits=2).tolist() == ['0.70']   # one seed: the mean alone

def test_transfer_matrix_and_format():
    recs = records_frame()
    mean, std = E.transfer_matrix(recs, 'sequential', 'macro_f1', order=['tweets', 'movie', 'nyt'])
    assert mean.index.tolist() == ['tweets', 'movie'] and mean.columns.tolist() == ['nyt']
    assert mean.loc['movie', 'nyt'] == pytest.approx(.65) and std.loc['tweets', 'nyt'] == pytest.approx(np.std([.7, .8], ddof=1))
    assert E.transfer_matrix(recs, 'sequential')[0].loc['tweets', 'nyt'] == pytest.approx(.76)   # weighted F1 by default
    with pytest.raises(ValueError, match='No records'): E.transfer_matrix(recs, 'sequential', n_target_labels=16)
    assert E.transfer_matrix(recs, 'sequential', n_target_labels=64)[0].shape == (2, 1)
    table = E.format_matrix(mean, std)
    assert table.loc['movie', 'nyt'] == '.65 ± .07' and E.format_matrix(pd.DataFrame({'a': [-0.26]}), digits=1).iloc[0, 0] == '-0.3'
    assert E.format_matrix(pd.DataFrame({'a': [np.nan]})).iloc[0, 0] == ''

def test_negative_transfer_flags():
    m = E.negative_transfer(records_frame(), majority={'nyt': .68}).set_index('source')
    # against target-only on the same seeds (.75): movie -> nyt (.65) is below it and below the majority class
    assert m.loc['movie', 'score'] == pytest.approx(.65) and m.loc['movie', 'target_only'] == pytest.approx(.75)
    assert m.loc['movie', 'below_target_only'] and m.loc['movie', 'below_majority'] and m.loc['movie', 'negative_transfer']
    assert not m.loc['tweets', 'negative_transfer'] and not m.loc['nyt', 'below_target_only']   # the reference itself: never
    # a cell run on seed 1 only is compared with target-only's seed 1, not the mean over both seeds
    recs = records_frame().assign(macro_f1=[.7, .8, .7, .9, .6, .7])
    one = E.negative_transfer(recs[~((recs.method == 'sequential') & (recs.seed == 1)) | (recs.source == 'tweets')]).set_index('source')
    assert one.loc['movie', 'target_only'] == pytest.approx(.7) and not one.loc['movie', 'below_majority']

def test_records_round_trip_and_refuse_bad_lines(tmp_path):
    rec = {f: 1 for f in E.RECORD_FIELDS} | dict(macro_f1=float('nan'), extra='x')
    E.append_record(tmp_path/'r/records.jsonl', rec)
    E.append_record(tmp_path/'r/records.jsonl', rec | dict(seed=2))
    back = E.read_records(tmp_path/'r/records.jsonl')
    assert back.seed.tolist() == [1, 2] and back.extra.tolist() == ['x', 'x'] and back.macro_f1.isna().all()
    assert 'NaN' not in (tmp_path/'r/records.jsonl').read_text()   # strict JSON: null
    with pytest.raises(ValueError, match="missing field"): E.append_record(tmp_path/'x.jsonl', dict(method='joint'))
    (tmp_path/'bad.jsonl').write_text('{"a": 1}\n\nnot json\n')
    with pytest.raises(ValueError, match='line 3 is not JSON'): E.read_records(tmp_path/'bad.jsonl')

def test_evaluate_scores_the_models_predictions(small_model, tok):
    df = _sample('tweets', 'test', 9)
    metrics, proba = E.evaluate(small_model, tok, df, LABELS)
    assert proba.shape == (9, 3) and np.allclose(proba.sum(1), 1)
    assert metrics == E.classification_metrics(df.label, [LABELS[i] for i in proba.argmax(1)], LABELS)

def _texts(fig): return [t.get_text() for ax in fig.axes for t in ax.texts]

def test_plot_confusion_shows_counts_and_row_shares(tmp_path):
    m = E.classification_metrics(['a', 'a', 'a', 'b'], ['a', 'a', 'b', 'b'], ['a', 'b'])
    fig = E.plot_confusion(m, title='t')
    assert _texts(fig) == ['2\n67%', '1\n33%', '0\n0%', '1\n100%'] and fig.axes[0].get_title() == 't'
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ['a', 'b']
    assert fig.axes[0].get_xlabel() == 'predicted' and fig.axes[0].get_ylabel() == 'true'
    assert 'macro-F1 0.733' in E.plot_confusion(m).axes[0].get_title()
    E.plot_confusion(m, tmp_path/'c.png')
    assert (tmp_path/'c.png').stat().st_size > 1000

def test_plot_heatmap_marks_flagged_cells(tmp_path):
    mean = pd.DataFrame([[.81, np.nan], [.5, .9]], index=['s1', 's2'], columns=['t1', 't2'])
    std = mean * 0 + .01
    flags = pd.DataFrame([[False, False], [True, False]], index=mean.index, columns=mean.columns)
    fig = E.plot_heatmap(mean, std=std, flags=flags, digits=3, path=tmp_path/'h.png')
    assert _texts(fig) == ['0.810\n±0.010', '0.500\n±0.010 ▼', '0.900\n±0.010']
    (frame,) = [p for p in fig.axes[0].patches if p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)]
    assert frame.get_xy() == (-0.5, 0.5)   # around row s2, column t1
    assert (tmp_path/'h.png').stat().st_size > 1000

def test_plot_summary_bars_are_the_means():
    s = E.summarise(records_frame(), by=('method',))
    fig = E.plot_summary(s, baseline=0.5)
    assert [round(b.get_height(), 3) for b in fig.axes[0].patches] == [round(v, 3) for v in s.macro_f1_mean]
    assert fig.axes[0].lines[-1].get_ydata()[0] == 0.5 and fig.axes[0].get_ylim() == (0, 1)

# ---------------------------------------------------------------------------------------------------
# edges and refusals: each says what is wrong and how to fix it

def test_classification_metrics_edges():
    m = E.classification_metrics(['a', 'a', 'b'], ['a', 'a', 'a'], ['a', 'b', 'c'])
    assert m['n'] == 3 and m['labels'] == ['a', 'b', 'c'] and list(m['per_class']) == ['a', 'b', 'c']
    assert m['per_class']['b'] == dict(precision=0.0, recall=0.0, **{'f1-score': 0.0}, support=1.0)   # never predicted: 0, not 1
    assert m['confusion'] == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert m['macro_f1'] == pytest.approx(0.8 / 3) and m['weighted_f1'] == pytest.approx(2 / 3 * 0.8)
    with pytest.raises(ValueError, match='equal, non-zero numbers'): E.classification_metrics(['a'], ['a', 'b'], ['a', 'b'])
    with pytest.raises(ValueError, match='got 0 and 0'): E.classification_metrics([], [], ['a'])

def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match='source_priors must be positive'): X.em_priors(np.ones((2, 2)) / 2, np.array([1.0, 0.0]))
    for share in (0, 1.5):
        with pytest.raises(ValueError, match=r'share must be in \(0, 1\]'): X.confident_rows(np.eye(2), share)
    one_class = pd.DataFrame(dict(text=['good', 'great'], label=['positive', 'positive']))
    with pytest.raises(ValueError, match='at least two classes'): LX._lexicon_expert(one_class, LABELS)
    assert LX._lexicon_expert(pd.concat([one_class, one_class.assign(label='negative')]), LABELS)(['fine']).shape == (1, 3)
    with pytest.raises(ValueError, match='one lexicon class per probability row'): X.label_free_scores(np.ones((2, 3)), np.array([1]))
    with pytest.raises(ValueError, match='at least one text'): X.label_free_scores(np.ones((0, 3)), np.array([]))
    assert X.label_free_scores(np.array([[.2, .8]]), np.array([1]))['n_label_free'] == 1
    with pytest.raises(ValueError, match="Use it on a sentiment domain"): LX._require_sentiment(no_data_task(['a']), 'x')
    with pytest.raises(ValueError, match="method 'joint' with n_target_labels=16"):
        E.transfer_matrix(records_frame(), 'joint', n_target_labels=16)
    with pytest.raises(ValueError, match=r"No records for method 'joint'\.$"): E.transfer_matrix(records_frame(), 'joint')

def test_confident_rows_edges():
    assert X.confident_rows(np.array([[.5, .5], [.5, .5], [.5, .5]]), 0.5).tolist() == [0, 1]   # ties keep row order
    empty = X.confident_rows(np.zeros((0, 3)), 0.5)
    assert empty.dtype.kind == 'i' and len(empty) == 0
    assert X.confident_rows(np.array([[.1, .9]]), 1.0).tolist() == [0]

def test_mean_pool_rows_and_empty_masks():
    h = torch.tensor([[[2.], [4.]], [[6.], [8.]]])
    assert torch.equal(A.mean_pool(h, torch.tensor([[1, 1], [1, 0]])), torch.tensor([[3.], [6.]]))
    assert torch.equal(A.mean_pool(h, torch.tensor([[1, 1], [0, 0]])), torch.tensor([[3.], [0.]]))   # no token: 0, not NaN
    assert A.mean_pool(h.double(), torch.tensor([[1, 1], [1, 0]])).dtype == torch.float64

def test_calibration_recovers_a_known_temperature_and_bias():
    "Labels drawn from softmax(z); probabilities given as softmax(3 z + shift): the fit undoes both."
    rng = np.random.default_rng(1)
    z = rng.normal(size=(4000, 3)) * 1.5
    y = np.array([rng.choice(3, p=p) for p in O.softmax(z)])
    shift = np.array([1.0, 0.0, -1.0])
    given = O.softmax(3 * z + shift)
    cal = X.fit_calibration(given, y)
    assert cal.temperature == pytest.approx(3, rel=0.1)
    assert np.allclose(cal.bias - cal.bias.mean(), -shift / 3, atol=0.1)
    out = cal(given)
    assert np.allclose(out.sum(1), 1) and np.allclose(out, O.softmax(z), atol=0.08)
    assert np.isfinite(cal(np.array([[1.0, 0.0, 0.0]]))).all()   # a zero probability stays finite
    assert X.fit_calibration(given, y, bias=False).bias.tolist() == [0.0, 0.0, 0.0]
    # a zero probability on a row's true class: clipped, the fit stays finite
    assert np.isfinite(X.fit_calibration(np.r_[given, [[0.0, 1.0, 0.0]]], np.r_[y, 0]).temperature)

def test_em_priors_converges_and_shift_priors_normalises():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    est = X.em_priors(p, np.array([0.5, 0.5]))
    assert np.allclose(X.shift_priors(p, [0.5, 0.5], est).mean(0), est, atol=1e-6)   # a fixed point of EM
    assert X.em_priors(p, [1, 1], max_iter=1).tolist() == X.shift_priors(p, np.array([1., 1.]), np.array([1., 1.])).mean(0).tolist()
    q = X.shift_priors(np.array([[0.5, 0.5]]), np.array([0.2, 0.8]), np.array([0.5, 0.5]))
    assert np.allclose(q, [[0.8, 0.2]])

def test_class_weights_edge():
    assert np.allclose(T.class_weights(np.array([1, 1, 1, 1]), 2).numpy(), [1.0, 0.5])   # an absent class gets 1, not n / K
    assert T.class_weights(np.array([0, 1, 1]), 2).dtype == torch.float32

def test_domain_classifier_shape_and_loss_reversal(small_model):
    head = A.DomainClassifier(384)
    assert [type(m).__name__ for m in head.net] == ['Linear', 'ReLU', 'Dropout', 'Linear'] and head.net[0].out_features == 256
    assert head.net[2].p == 0.1
    f = torch.randn(5, 384, requires_grad=True)
    out = head.eval()(f)
    assert out.shape == (5,)
    head.loss(f, torch.ones(5), lam=0.5).backward()
    g_half = f.grad.clone(); f.grad = None
    head.loss(f, torch.ones(5)).backward()   # lam defaults to 1
    torch.testing.assert_close(f.grad, 2 * g_half)
    x = torch.ones(2, requires_grad=True)
    A.grad_reverse(x).sum().backward()
    assert x.grad.tolist() == [-1.0, -1.0]   # lam defaults to 1

def test_run_experiment_samples_with_its_seed_and_passes_the_target_text(experiment):
    res, log = experiment('dann', seed=3, max_unlabelled=30, dev_labels=9)
    (c,) = log.calls
    tweets = load_domain('tweets')
    split = lambda s: tweets[tweets.split == s].reset_index(drop=True)
    assert c['dev'].equals(X.few_shot(R._cap(split('dev'), 12, 3), 9, 3))
    assert c['unlabelled'].equals(R._cap(split('train'), 30, 3).drop(columns='label'))
    assert c['source'].equals(X.source_rows('nyt', 'train', 10, 3)) and c['cfg'].adversarial > 0
    assert res.record['dev_labels'] == 9 and res.record['n_dev'] == 9 and res.tokenizer is not None and res.fits == [log.calls[0]['result']]

def test_run_experiment_source_dev_and_record_fields(experiment):
    res, log = experiment('source_only', n_target_labels=0, notebook='11_cross_domain', command='xdt run x', extra=dict(run_id='r1'))
    (c,) = log.calls
    assert c['dev'].equals(X.source_rows('nyt', 'dev', 12, 1)) and c['train'] is None
    rec = res.record
    assert (rec['notebook'], rec['command'], rec['run_id'], rec['model']) == ('11_cross_domain', 'xdt run x', 'r1', 'all-minilm-l6-v2')
    assert rec['train_seconds'] == 1.2 and rec['epochs'] == [1] and rec['n_source'] == 10 and rec['dev_labels'] is None
    assert rec['n_target_labels'] == 0 and rec['config']['seed'] == 1
    lex, _ = experiment('vader_lexicon', source=None, n_target_labels=0)
    assert lex.record['epochs'] == [] and lex.record['n_source'] == 0 and lex.record['source'] == 'tweets' and lex.record['train_seconds'] >= 0

def test_run_experiment_removes_checkpoints_unless_kept(experiment, tmp_path):
    experiment(out_dir=tmp_path/'a')
    assert (tmp_path/'a/metrics.json').exists() and not list((tmp_path/'a').glob('**/checkpoint'))
    experiment(out_dir=tmp_path/'b', keep_checkpoint=True)
    assert (tmp_path/'b/checkpoint/state.pt').exists()
    before = (tmp_path/'records.jsonl').read_text()
    res, _ = experiment(out_dir=None, records=None)   # nothing written anywhere
    assert res.record['macro_f1'] >= 0 and (tmp_path/'records.jsonl').read_text() == before

def test_run_experiment_adapts_label_shift_to_each_target(monkeypatch, experiment):
    "label_shift_em estimates priors on each tested target's own unlabelled text, and the record carries them."
    seen, em = [], X.em_priors
    def spy(proba, source_priors):
        seen.append(len(proba))
        return np.array([0.2, 0.3, 0.5]) if len(seen) == 1 else np.array([0.6, 0.3, 0.1])
    monkeypatch.setattr(LS, 'em_priors', spy)
    res, _ = experiment('label_shift_em', n_target_labels=0, max_unlabelled=25, also_test_on=['movie'])
    assert seen == [25, 25]
    assert list(res.record['estimated_priors'].values()) == [0.2, 0.3, 0.5]
    assert list(res.other_records[0]['estimated_priors'].values()) == [0.6, 0.3, 0.1]

def test_checkpoints_are_atomic_and_refused_when_foreign(small_model, tmp_path):
    best = T._tensors(small_model)
    (tmp_path/'ck.tmp').mkdir(); (tmp_path/'ck.tmp/junk').write_text('left by a killed run')
    T.save_checkpoint(tmp_path/'ck', small_model, best, dict(fingerprint=dict(a=1), epoch=0))
    T.save_checkpoint(tmp_path/'ck', small_model, best, dict(fingerprint=dict(a=1), epoch=1))   # over an older one
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ck'] and sorted(p.name for p in (tmp_path/'ck').iterdir()) == \
        ['best.safetensors', 'model.safetensors', 'state.pt']
    w, b, st = T.load_checkpoint(tmp_path/'ck', dict(a=1))
    assert st['epoch'] == 1 and same(w, best) and same(b, best)
    with pytest.raises(T.CheckpointError, match=r'different run \(differs in: a, b\)'): T.load_checkpoint(tmp_path/'ck', dict(a=2, b=0))
    (tmp_path/'ck/model.safetensors').write_bytes(b'truncated')
    with pytest.raises(T.CheckpointError, match=r'corrupt or incomplete \(\w+Error.*Fix: delete'): T.load_checkpoint(tmp_path/'ck', dict(a=1))

class Payload:
    "An object a checkpoint must never unpickle."

def test_checkpoints_load_without_unpickling_code(small_model, tmp_path):
    best = T._tensors(small_model)
    T.save_checkpoint(tmp_path/'ck', small_model, best, dict(fingerprint=dict(a=1), code=Payload()))
    with pytest.raises(T.CheckpointError, match='corrupt or incomplete'): T.load_checkpoint(tmp_path/'ck', dict(a=1))

def test_few_shot_edges():
    df = pd.DataFrame(dict(text=list('abcdefghij'), label=['x'] * 7 + ['y'] * 3), index=range(10, 20))
    assert X.few_shot(df, 10).index.tolist() == list(range(10)) and X.few_shot(df, 12).index.tolist() == list(range(10))
    two = X.few_shot(df, 2, seed=0)
    assert sorted(two.label) == ['x', 'y'] and two.index.tolist() == [0, 1]   # each class one row once n covers the classes
    assert len(X.few_shot(df, 1, seed=0)) == 1
    with pytest.raises(ValueError, match='n_target_labels must be >= 0'): X.few_shot(df, -1)

def test_source_rows_edges():
    one_each = X.source_rows('movie+nyt', 'train', 1, seed=0)
    assert len(one_each) == 2 and one_each.index.tolist() == [0, 1]   # at least one row per source
    assert not X.source_rows('nyt', 'train', 5, seed=0).equals(X.source_rows('nyt', 'train', 5, seed=1))
    assert len(X.source_rows('nyt', 'dev', None, seed=0)) == len(load_domain('nyt', 'dev'))
    with pytest.raises(ValueError, match='each domain once'): X.source_domains('nyt+nyt')

def test_model_files_round_trip(small_model, tok, tmp_path):
    "save_model makes nested folders, overwrites its own files, writes safetensors; load_model names what is missing or broken."
    path = X.save_model(small_model, tok, tmp_path/'a/b/m')
    X.save_model(small_model, tok, path)   # again, into the same folder
    assert (path/'model.safetensors').is_file() and not list(path.glob('*.bin'))
    model, _, labels = X.load_model(path)
    assert labels == LABELS and same(T._tensors(model), T._tensors(small_model))
    (tmp_path/'half').mkdir(); (tmp_path/'half/config.json').write_text((path/'config.json').read_text())
    with pytest.raises(FileNotFoundError, match='needs config.json and model.safetensors.*Fix: pass the folder'): X.load_model(tmp_path/'half')
    (tmp_path/'half/model.safetensors').write_bytes(b'not weights')
    with pytest.raises(ValueError, match=r'could not be loaded \(\w+.*corrupt or incomplete\. Fix: save the model again'):
        X.load_model(tmp_path/'half')

def test_predict_reports_bad_rows_and_files_keep_their_rows(small_model, tok, tmp_path):
    path = X.save_model(small_model, tok, tmp_path/'m')
    with pytest.raises(ValueError, match=r'7 empty or non-string text\(s\) at position\(s\) \[0, 1, 2, 3, 4\]\.'):
        X.predict(path, [''] * 7)
    texts = ['Great phone.', 'Awful service, never again.']
    assert X.predict(path, texts).text.tolist() == texts
    pd.DataFrame(dict(text=texts)).to_csv(tmp_path/'in.csv', index=False)
    X.predict_file(path, tmp_path/'in.csv', tmp_path/'x/y/out.csv')
    with pytest.raises(FileExistsError, match='overwrite=True'):   # an existing file is replaced only if asked
        X.predict_file(path, tmp_path/'in.csv', tmp_path/'x/y/out.csv')
    X.predict_file(path, tmp_path/'in.csv', tmp_path/'x/y/out.csv', overwrite=True)   # a second run, same folder
    assert pd.read_csv(tmp_path/'x/y/out.csv').columns.tolist() == ['text', 'label', *[f'p_{l}' for l in LABELS]]

def test_predict_proba_truncates_at_128_tokens(small_model, tok):
    long = ' '.join(['good'] * 60 + ['terrible'] * 200)
    cut = tok.convert_tokens_to_string(tok.tokenize(long)[:126])   # 126 word pieces + [CLS] and [SEP]
    assert np.allclose(E.predict_proba(small_model, tok, [long]), E.predict_proba(small_model, tok, [cut]), atol=1e-5)

def test_models_are_reused_only_for_the_same_rows_and_config(monkeypatch, task):
    log = FitLog(monkeypatch)
    task = dataclasses.replace(task, models=R.ModelCache())
    X.source_only(task)
    moved = dataclasses.replace(task, source_train=task.source_train.iloc[1:], source_dev=pd.concat([task.source_train.iloc[:1], task.source_dev]))
    X.source_only(moved)   # the same rows, one moved from train to dev: another model
    X.source_only(dataclasses.replace(task, cfg=dataclasses.replace(task.cfg, lr=2e-4)))   # another config: another model
    assert len(log.calls) == 3

class RowsFitLog(FitLog):
    "A FitLog whose trace on the head grows with the rows a stage trains on: models from other rows differ."
    def trace(self, train, source) -> torch.Tensor:
        return torch.tensor([0.0, 0.1, 0.2]) * sum(len(f) for f in (train, source) if f is not None)

def test_results_do_not_depend_on_the_order_of_runs(monkeypatch, task):
    "One cache shared by the methods on two sources: in any order, each gets the model it trains without a cache."
    log = RowsFitLog(monkeypatch)
    tasks = [task, dataclasses.replace(task, source_train=task.source_train.iloc[:6])]
    methods = ['source_only', 'label_shift_em', 'sequential', 'self_train', 'lexicon_ensemble', 'sequential_lexicon']
    texts = task.target_dev.text.tolist()
    def probabilities(order, models):
        return {(m, i): X.METHODS[m](dataclasses.replace(tasks[i], models=models)).predict_proba(texts) for m, i in order}
    order = [(m, i) for i in (0, 1) for m in methods]
    alone = probabilities(order, None)
    trained_alone = len(log.calls)
    interleaved = [(m, i) for m in methods[::-1] for i in (1, 0)]
    for runs in (order, order[::-1], interleaved):
        log.calls.clear()
        got = probabilities(runs, R.ModelCache())
        assert len(log.calls) < trained_alone   # the cache was used...
        for k in alone: assert np.allclose(got[k], alone[k], atol=1e-6), k   # ...and changed no result

def test_vader_lexicon_needs_no_source():
    assert not X.METHODS['vader_lexicon'].needs_source and not X.METHODS['vader_lexicon'].needs_target
    assert not X.METHODS['vader_lexicon'].uses_target_text and X.METHODS['dann'].uses_target_text
    assert X.METHODS['joint'].needs_source and X.METHODS['joint'].needs_target and X.METHODS['joint'] is X.joint

# --- The study store: a study skips exactly what it has already run ---------------------------------------------

@pytest.mark.parametrize('method', sorted(X.METHODS))
def test_store_plans_the_keys_each_method_writes(method, monkeypatch, small_model, tok, tmp_path):
    "For every method, the keys `run_once` plans before training are the keys its records get, so a rerun trains nothing."
    from xdt_nb import store as ST
    monkeypatch.setattr(X.TransferTask, 'new_model', lambda self: (copy.deepcopy(small_model), tok))
    FitLog(monkeypatch)
    fn = X.METHODS[method]
    learns_target = fn.uses_target_text or fn.needs_target
    n = 8 if fn.needs_target else 0
    ask = dict(target='tweets', method=method, source='nyt' if fn.needs_source else None, n_target_labels=n, seed=1,
               cfg=cfg(alpha=0.4), max_source=10, max_dev=12, max_test=20, max_unlabelled=30,
               dev_labels=6 if n else None, also_test_on=[] if learns_target else ['amazon'])
    store = ST.Store(tmp_path/'records.jsonl')
    first = ST.run_once(store, 'first', **ask)     # raises if a written key is not the planned one
    assert [r['target'] for r in first] == ['tweets'] + ([] if learns_target else ['amazon'])
    class Ran(Exception): "run_experiment was called"
    def refuse(**kw): raise Ran
    monkeypatch.setattr(ST, 'run_experiment', refuse)
    again = ST.run_once(store, 'again', **ask)      # would raise Ran if it trained
    assert [r['key'] for r in again] == [r['key'] for r in first] and len(store.records()) == len(first)
    with pytest.raises(Ran): ST.run_once(store, 'other seed', **ask | dict(seed=2))  # another experiment: it runs

# --- Widgets: a control drives what the explorer and the playground show ------------------------------------------

def _study_frame():
    "Store-like rows: tweets → amazon and nyt at 16 and 64 labels (two seeds), movie → amazon, and target_only,"
    "a baseline whose record names its target as source while its spec reads none."
    rows = []
    for target, base in (('amazon', .6), ('nyt', .4)):
        for seed in (0, 1):
            for n in (16, 64):
                rows.append(dict(model='enc', method='sequential', source='tweets', target=target, n_target_labels=n,
                                 seed=seed, weighted_f1=base + n / 1000 + seed / 100, macro_f1=base - .1))
            rows.append(dict(model='enc', method='target_only', source=target, target=target, n_target_labels=16,
                             seed=seed, weighted_f1=base - .05, macro_f1=base - .2))
    rows.append(dict(model='enc', method='sequential', source='movie', target='amazon', n_target_labels=16, seed=0,
                     weighted_f1=.5, macro_f1=.4))
    frame = pd.DataFrame(rows)
    return frame.assign(spec=[dict(source=None if m == 'target_only' else s) for m, s in zip(frame.method, frame.source)])

def test_explorer_table_and_plot_follow_its_controls():
    "Setting a control's value, as a browser does, redraws the table and the plot from that choice's records."
    from xdt_nb import widgets as WG
    ex = WG.TransferExplorer(_study_frame())
    assert ex.source.options == ('movie', 'tweets') and ex.target.options == ('amazon',)  # movie ran amazon only
    ex.source.value = 'tweets'
    assert ex.target.options == ('amazon', 'nyt') and ex.target.value == 'amazon'
    ex.target.value = 'nyt'
    seq = [.4 + .016, .4 + .016 + .01]
    assert ex.shown.loc['sequential', 'weighted F1'] == f'{np.mean(seq):.3f} ± {np.std(seq, ddof=1):.3f}'
    assert ex.shown.loc['target_only', 'weighted F1'] == '0.350 ± 0.000'   # the baseline joins every source's pair
    assert ex.shown.loc['sequential', 'picked'] == '◀' and ex.shown.loc['target_only', 'picked'] == ''
    assert ex.table.value == ex.shown.to_html() and f'{np.mean(seq):.3f}' in ex.table.value   # what the widget shows
    x, y = WG.drawn(ex.figure)['sequential']
    assert x == [0, 1] and np.allclose(y, [.421, .469])
    ex.labels.value = 64
    assert ex.shown.index.tolist() == ['sequential']               # target_only ran 16 labels only
    dotted = [line.get_xdata()[0] for line in ex.figure.axes[0].lines if line.get_linestyle() == ':']
    assert dotted == [1]                                           # the picked budget, marked
    ex.method.value = 'target_only'
    assert ex.labels.options == (16,) and ex.labels.value == 16    # a budget it did not run is not offered
    assert ex.shown.loc['target_only', 'picked'] == '◀'

def test_playground_probabilities_follow_the_text(small_model, tok, tmp_path):
    "Committing a sentence in the box gives each saved model's probabilities for that sentence."
    from xdt_nb import widgets as WG
    folders = {}
    for name, seed in (('general', 0), ('finance', 1)):
        m = copy.deepcopy(small_model)
        torch.manual_seed(seed)
        m.classifier.reset_parameters()   # two models that read a sentence differently
        folders[name] = X.save_model(m, tok, tmp_path/name)
    pg = WG.PredictionPlayground(folders, text='Great phone, the battery lasts two days.')
    first = pg.probabilities
    pg.text.value = 'Profits collapsed and the bank cut 2,000 jobs.'
    for name, (m, t, labels) in {n: X.load_model(f) for n, f in folders.items()}.items():
        assert pg.probabilities.index.tolist() == labels
        assert np.allclose(pg.probabilities[name], E.predict_proba(m, t, [pg.text.value])[0], atol=1e-6)
    assert not np.allclose(pg.probabilities.values, first.values)
    assert not np.allclose(pg.probabilities.general, pg.probabilities.finance)
    assert pg.plot.value[:4] == b'\x89PNG'
    pg.text.value = ''
    assert pg.probabilities is None and pg.plot.value == b''

# ---------------------------------------------------------------------------------------------------
# knowledge injection (14b): each arm changes what it claims to, and only that

@pytest.fixture(scope='session')
def knowledge(): return KI.load_knowledge()

@pytest.fixture(scope='session')
def symptom_reviews():
    "8 short real drug reviews (sentiment labels) that each name a common symptom."
    df = load_domain('drugs', 'train')
    named = df.text.str.contains('tired|headache|nausea|acne|anxiety', case=False)
    return X.few_shot(df[named & df.text.str.len().between(40, 300)].drop_duplicates('text'), 8, 0)

@pytest.fixture
def injection_task(symptom_reviews, small_model, tok, monkeypatch):
    "A one-step task on the symptom reviews; its models are copies of the small encoder."
    monkeypatch.setattr(R.TransferTask, 'new_model', lambda self: (copy.deepcopy(small_model), tok))
    return lambda seed=0: R.TransferTask(LABELS, symptom_reviews, symptom_reviews, None, None,
                                         cfg(lr=1e-3, seed=seed))

def _rows_set(vectors): return set(map(bytes, vectors.numpy()))

def test_knowledge_text_writes_the_concepts_before_the_review(knowledge, injection_task):
    "The concepts' names and parents come first; a review with only negated mentions is left as it was."
    text = 'I was always tired.'
    mentions = knowledge.mentions([text])[0]
    assert KI.with_knowledge_text(text, mentions, knowledge.terms) == f'Fatigue (Constitutional symptom). {text}'
    negated = 'I had no headaches.'
    assert KI.with_knowledge_text(negated, knowledge.mentions([negated])[0], knowledge.terms) == negated
    trained = KI.knowledge_as_text(injection_task())
    assert trained.info['knowledge_coverage'] > 0.5

def test_knowledge_graph_changes_only_the_linked_reviews(injection_task, tok):
    "After training, the injector moves a linked review's encoding and no other; told of no mentions, it is inert."
    trained = KI.knowledge_graph(injection_task())
    injector = trained.model.knowledge
    assert injector.proj.weight.abs().sum() > 0          # trained away from its zero start
    texts = ['I was always tired and anxious.', 'The pill works well for me.']   # the second links nothing
    trained.predict_proba(texts)                          # links the texts and tells the injector
    enc = tok(texts, padding=True, return_tensors='pt')
    encode = lambda: trained.model.bert(**enc).last_hidden_state.detach()
    injected = encode()
    known, injector.token_rows = injector.token_rows, {}
    plain = encode()
    injector.token_rows = known
    assert (injected[0] - plain[0]).abs().max() > 1e-3
    assert torch.equal(injected[1], plain[1])

@pytest.fixture
def with_dropout(injection_task, monkeypatch):
    "`injection_task`, its models with dropout back on: an arm that drew other random numbers would train otherwise."
    small, tok_ = injection_task().new_model()
    monkeypatch.setattr(R.TransferTask, 'new_model', lambda self: (set_dropout(copy.deepcopy(small), 0.1), tok_))
    return injection_task

def test_injecting_nothing_is_target_only_exactly(with_dropout, knowledge):
    "With all-zero concept vectors the injected arm trains to target-only's weights, dropout on: the arms differ by the knowledge alone."
    injection_task = with_dropout
    task = lambda: dataclasses.replace(injection_task(), cfg=cfg(lr=1e-3, epochs=2))
    plain = R.METHODS['target_only'](task()).model.state_dict()
    injected = KI._inject(task(), torch.zeros_like(knowledge.vectors)).model.state_dict()
    assert injected.keys() - plain.keys() == {'knowledge.proj.weight'}
    for name, weight in plain.items(): assert torch.equal(weight, injected[name]), name

def test_sequential_graph_goes_on_from_the_source_model(with_dropout, knowledge):
    "With zero vectors it trains to `sequential`'s weights: the same source model, the same target stage (`keep_start` too)."
    injection_task = with_dropout
    tweets = X.few_shot(load_domain('tweets', 'train'), 8, 0)
    task = lambda: dataclasses.replace(injection_task(), source_train=tweets, source_dev=tweets, cfg=cfg(lr=1e-3))
    plain = R.METHODS['sequential'](task()).model.state_dict()
    nothing = KI._inject(task(), torch.zeros_like(knowledge.vectors), start=KI._from_source(task())).model.state_dict()
    for name, weight in plain.items(): assert torch.equal(weight, nothing[name]), name

def test_sequential_graph_shuffled_differs_from_it_by_the_vectors_alone(monkeypatch, knowledge):
    "Both arms inject from the same source model; the control's vectors are the graph's, permuted by the seed."
    calls = []
    monkeypatch.setattr(KI, '_inject', lambda t, features, start=None: calls.append((features, start)))
    monkeypatch.setattr(KI, '_from_source', lambda t: ('source model of', t.cfg.seed))
    task = R.TransferTask(LABELS, None, None, None, None, cfg(seed=3))
    KI.sequential_graph(task); KI.sequential_graph_shuffled(task)
    (graph, graph_start), (control, control_start) = calls
    assert graph_start == control_start == ('source model of', 3)
    assert torch.equal(graph, knowledge.vectors)
    assert torch.equal(control, KI.shuffled_rows(knowledge.vectors, 3)) and not torch.equal(control, graph)

def test_knowledge_type_adds_one_learned_vector_per_category(knowledge, injection_task):
    "Features are one-hot categories: concepts of one HPO category get the same vector, others another."
    injector = KI.knowledge_type(injection_task()).model.knowledge
    features, row = injector.features, {c: i for i, c in enumerate(knowledge.concepts)}
    assert features.shape == (len(knowledge.concepts), len(set(knowledge.categories.values())))
    headache, seizure, acne = (features[row[c]] for c in ('HP:0002315', 'HP:0001250', 'HP:0001061'))
    assert torch.equal(headache, seizure) and not torch.equal(headache, acne)
    assert injector.proj.weight.abs().sum() > 0

def test_graph_shuffled_permutes_the_graph_vectors(knowledge, injection_task):
    "The control holds exactly the graph's vectors, nearly all on another concept; the seed picks the permutation."
    features = KI.graph_shuffled(injection_task(seed=0)).model.knowledge.features
    assert _rows_set(features) == _rows_set(knowledge.vectors)
    assert (features != knowledge.vectors).any(1).float().mean() > 0.99
    assert not torch.equal(features, KI.shuffled_rows(knowledge.vectors, seed=1))

def test_graph_random_keeps_only_the_graph_statistics(knowledge, injection_task):
    "The control's vectors share no row with the graph but have its per-dimension mean."
    features = KI.graph_random(injection_task()).model.knowledge.features
    assert not _rows_set(features) & _rows_set(knowledge.vectors)
    np.testing.assert_allclose(features.mean(0), knowledge.vectors.mean(0), atol=0.05)

def test_graph_random_links_moves_the_mentions_to_other_concepts(injection_task):
    "Same reviews, same mention tokens, other concepts: every linked review's rows change."
    graph = KI.knowledge_graph(injection_task()).model.knowledge.token_rows
    relinked = KI.graph_random_links(injection_task()).model.knowledge.token_rows
    linked = [ids for ids, rows in graph.items() if max(rows) >= 0]
    assert len(linked) >= 6
    for ids in linked:
        assert all(b >= 0 for a, b in zip(graph[ids], relinked[ids]) if a >= 0)   # every mention token still gets one
        assert graph[ids] != relinked[ids]
# --- Multi-label: a sigmoid and binary cross-entropy per label, and metrics per label ---------------------------

FINDINGS = ['Cardiomegaly', 'Pleural Effusion', 'normal']

def _with_findings(rows, sets):
    "`rows` with lists of findings as labels, `sets` repeated in row order: labels co-occur, one is rare."
    return rows.assign(label=[sets[i % len(sets)] for i in range(len(rows))])

def test_multilabel_fit_backpropagates_weighted_binary_cross_entropy(monkeypatch, model, tok, target, dev):
    "Each step's loss is the mean over texts and labels of BCE on sigmoids, positives weighted n_neg / n_pos; not a softmax."
    train = _with_findings(target, [('Cardiomegaly', 'Pleural Effusion'), ('normal',), ('Cardiomegaly',), ()])
    spy = StepSpy(monkeypatch, model)
    T.fit(model, tok, FINDINGS, train, _with_findings(dev, [('normal',), ('Cardiomegaly',)]),
          cfg=cfg(epochs=2, multi_label=True, class_weights=True))
    by_ids = {tuple(tok(t, truncation=True, max_length=128)['input_ids']): l for t, l in zip(train.text, train.label)}
    # 8 rows: Cardiomegaly in 4 (weight 4/4), Pleural Effusion in 2 (6/2), normal in 2 (6/2)
    pos_weight = np.array([1.0, 3.0, 3.0])
    assert len(spy.losses) == 2
    for (ids, logits), loss in zip(spy.passes, spy.losses):
        rows = [by_ids[tuple(r[r != tok.pad_token_id].tolist())] for r in ids]
        y = np.array([[float(f in r) for f in FINDINGS] for r in rows])
        p = 1 / (1 + np.exp(-logits.numpy()))
        expected = -(pos_weight * y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
        assert loss == pytest.approx(expected, rel=1e-5)

def test_multilabel_dev_scores_are_the_evaluated_metrics(model, tok, target, dev):
    "fit's dev macro-F1 and accuracy are multilabel_metrics' macro-F1 and exact match of the kept weights."
    train = _with_findings(target, [('Cardiomegaly', 'normal'), ('normal',)])
    dev_rows = _with_findings(dev, [('normal',), ('Cardiomegaly', 'Pleural Effusion'), ()])
    res = T.fit(model, tok, FINDINGS, train, dev_rows, cfg=cfg(epochs=1, multi_label=True))
    metrics, proba = E.evaluate(model, tok, dev_rows, FINDINGS, multi_label=True)
    assert ((proba > 0) & (proba < 1)).all() and not np.allclose(proba.sum(1), 1)   # sigmoids, not a softmax
    assert res.best_dev_macro_f1 == pytest.approx(metrics['macro_f1'])
    assert res.history[-1]['dev_accuracy'] == pytest.approx(metrics['exact_match'])

def test_predicted_labels_are_independent_yes_no_answers():
    "Each label is on where its sigmoid reaches the threshold: several at once, or none; argmax for one label per text."
    logits = np.array([[2.0, 1.0, -1.0], [-2.0, -0.5, -3.0]])
    assert T.predicted_labels(logits, multi_label=True).tolist() == [[1, 1, 0], [0, 0, 0]]
    assert T.predicted_labels(logits, multi_label=True, threshold=0.8).tolist() == [[1, 0, 0], [0, 0, 0]]
    assert T.predicted_labels(logits).tolist() == [0, 1]

def test_multilabel_metrics_by_hand():
    "Micro-F1 pools decisions, macro-F1 averages labels (an undetected label counts 0), AUROC counts ties as half."
    y = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]])
    proba = np.array([[.8, .1, .3], [.7, .4, .3], [.2, .3, .1], [.4, .2, .9]])
    m = E.multilabel_metrics(y, proba, ['A', 'B', 'C'])
    # A: 2 of 3 found, no false alarm; B: missed; C: missed once, one false alarm
    assert m['per_label']['A'] == dict(precision=1.0, recall=2 / 3, f1=0.8, support=3, auroc=1.0)
    # B: its positive (.3) above the negatives .1 and .2, below .4
    assert m['per_label']['B']['f1'] == 0.0 and m['per_label']['B']['auroc'] == pytest.approx(2 / 3)
    # C: its positive (.3) against the negatives .3 (tie: half), .1 (above), .9 (below)
    assert m['per_label']['C']['auroc'] == pytest.approx(1.5 / 3)
    assert m['micro_f1'] == pytest.approx(2 * 2 / (2 * 2 + 1 + 3))   # tp 2, fp 1, fn 3
    assert m['macro_f1'] == pytest.approx((0.8 + 0 + 0) / 3)
    assert m['exact_match'] == 0.25 and m['macro_auroc'] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert E.multilabel_metrics(y, proba, ['A', 'B', 'C'], threshold=0.25)['per_label']['B']['recall'] == 1.0

def test_multilabel_refusals_name_the_fix():
    "A string where a list of labels belongs, and an unknown finding, fail with the fix."
    with pytest.raises(ValueError, match='not a list of labels'): T.multi_hot(['normal'], FINDINGS)
    with pytest.raises(ValueError, match="'Edema'"): T.multi_hot([('Edema',)], FINDINGS)
# 14a_medical_images: the ImageNet weights are loaded, the patch split cannot leak, the intervals cover

@pytest.fixture(scope='session')
def nuclei():
    from xdt_nb import images as I
    return I.nuclei_image()

def test_imagenet_weights_are_loaded_and_see_the_cat():
    "The pretrained encoder calls scikit-image's cat an Egyptian cat; the same network, random, has no idea."
    from xdt_nb import images as I
    from xdt_nb.sources import fetch
    cat = I.read_image(fetch('chelsea-cat')/'chelsea.png')[None]
    top, prob = I.imagenet_top(I.load_encoder(), cat)
    assert I.IMAGENET_CATS.get(int(top[0])) == 'Egyptian cat' and prob[0] > 0.5
    assert I.imagenet_top(I.load_encoder(pretrained=False), cat)[1][0] < 0.01

def test_weights_are_read_as_tensors_only(monkeypatch):
    "`torch.load` is asked for weights only: a pickle in the file could not run code."
    from xdt_nb import images as I
    calls, real_load = [], torch.load
    monkeypatch.setattr(I.torch, 'load', lambda *a, **k: calls.append(k) or real_load(*a, **k))
    I.load_encoder()
    assert calls == [{'weights_only': True}]

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_train_and_test_patches_share_no_pixel(nuclei, seed):
    "Training patches lie wholly in the left half, test patches in the right: no pixel is in both."
    from xdt_nb import images as I
    _, instances = nuclei
    train, train_y = I.patch_centres(instances, 'left', 512, seed=seed)
    test, _ = I.patch_centres(instances, 'right', 500, seed=1000)
    assert I.shared_pixels(train, test, instances.shape) == 0
    assert (train[:, 1] + 16 <= 256).all() and (test[:, 1] - 16 >= 256).all()
    assert train_y.sum() == 256 and ((instances[train[:, 0], train[:, 1]] > 0) == train_y).all()

def test_shared_pixels_counts_the_overlap():
    "Two 32-pixel patches ten columns apart share 32 x 22 pixels (the detector the split test relies on)."
    from xdt_nb import images as I
    assert I.shared_pixels(np.array([[20, 20]]), np.array([[20, 30]]), (64, 64)) == 32 * 22

def test_training_moves_batch_norm_statistics_to_the_new_images(nuclei):
    "With lr 0 only the statistics change: most of the way to the new images' means within 10 steps."
    from xdt_nb import images as I
    image, instances = nuclei
    centres, labels = I.patch_centres(instances, 'left', 16, seed=0)
    patches = I.cut_patches(image, centres)
    start = I.load_encoder()._bn0.running_mean.clone()
    net = I.train_classifier(I.load_encoder(), patches, labels, steps=10, lr=0.0)
    with torch.no_grad(): target = net._conv_stem(I.to_input(patches, 64)).mean(dim=(0, 2, 3))
    assert (net._bn0.running_mean - start).norm() / (target - start).norm() > 0.5

def test_wilson_interval_covers_95_percent():
    "Over many binomial draws of 16 predictions, the interval holds the true accuracy ~95% of the time."
    from xdt_nb import images as I
    rng = np.random.default_rng(0)
    for p in (0.6, 0.8):
        draws = rng.binomial(16, p, size=4000)
        covered = np.mean([lo <= p <= hi for lo, hi in (I.wilson_interval(int(k), 16) for k in draws)])
        assert 0.92 < covered < 0.99

def test_leave_one_out_never_sees_the_held_out_label():
    "Changing one item's label cannot change that item's own prediction."
    from xdt_nb import images as I
    x = np.array([[0.], [0.1], [0.2], [1.], [1.1], [1.2]])
    for flipped in ('baabbb', 'aaaabb'):
        i = next(i for i, (a, b) in enumerate(zip('aaabbb', flipped)) if a != b)
        assert I.leave_one_out(x, np.array(list(flipped)))[i] == 'aaabbb'[i]
# knowledge-graph embeddings (13_knowledge_graph): the loss they train with, the settings, the store

def test_kge_softmax_loss_pushes_every_wrong_tail_by_its_probability():
    "The 1-N loss's gradient on the scores is softmax minus one-hot: the likeliest wrong tail is pushed most."
    from xdt_nb.kg import softmax_cross_entropy
    scores = torch.tensor([[1., 3., 0., 2.]], requires_grad=True)
    softmax_cross_entropy(scores, torch.tensor([0])).backward()
    expected = scores.softmax(-1).detach() - torch.tensor([[1., 0., 0., 0.]])
    assert torch.allclose(scores.grad, expected, atol=1e-6)
    assert scores.grad[0, 1] == scores.grad[0, 1:].max() and scores.grad[0, 0] < 0

def test_kge_settings_reach_pykeen():
    "N3 is asked of PyKEEN only at a positive weight, and no model's entities are held to unit norm."
    from xdt_nb.kg import _model_kwargs, kge_config
    complex_kwargs = _model_kwargs('ComplEx', kge_config('ComplEx', n3_weight=0.05))
    assert complex_kwargs['regularizer'] == 'lp' and complex_kwargs['regularizer_kwargs'] == dict(
        p=3.0, weight=0.05, normalize=True)
    assert _model_kwargs('ComplEx', kge_config('ComplEx', n3_weight=0.0))['regularizer'] is None
    assert _model_kwargs('DistMult', kge_config('DistMult'))['entity_constrainer'] is None
    assert _model_kwargs('TransE', kge_config('TransE'))['entity_constrainer'] is None
    assert 'regularizer' not in _model_kwargs('RotatE', kge_config('RotatE'))

def test_kge_once_trains_each_spec_once(tmp_path, monkeypatch):
    "A (model, settings, seed) already in the store is read back, not trained; another setting is trained."
    from xdt_nb import kg as KG
    calls = []
    def fake_train(name, config, seed):
        calls.append((name, config['lr'], seed))
        return dict(model=name, seed=seed, mrr=0.5)
    monkeypatch.setattr(KG, 'train_kge', fake_train)
    store = KG.Store(tmp_path/'records.jsonl')
    first = KG.kge_once(store, 'r1', 'ComplEx', KG.kge_config('ComplEx'), 0)
    again = KG.kge_once(store, 'r2', 'ComplEx', KG.kge_config('ComplEx'), 0)
    assert calls == [('ComplEx', 0.01, 0)] and again['key'] == first['key'] and again['run_id'] == 'r1'
    KG.kge_once(store, 'r3', 'ComplEx', KG.kge_config('ComplEx', lr=0.03), 0)
    assert calls[-1] == ('ComplEx', 0.03, 0) and len(store.records()) == 2
    assert first['spec'] == dict(task='link_prediction', dataset='UMLS', data=KG.umls_version(), model='ComplEx',
                                 config=KG.kge_config('ComplEx'), seed=0)
