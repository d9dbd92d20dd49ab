"""The reliability suite (issue 50): bad input, broken files on disk, a diverging run, writers at once, a
killed run, fuzzed loaders, no network. Tiny sizes; each test fails when the mechanism it guards is off."""
import contextlib, csv, io, json, multiprocessing, os, signal, socket, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import load_file, save_file

from conftest import XDT, xdt, read_json
from xdt_nb.cli import main
from xdt_nb.data import load_domain, load_table, read_labelled_file, read_table, read_table_chunks
from xdt_nb.evaluate import append_record
from xdt_nb.model import load_classifier, load_tokenizer
from xdt_nb.train import CheckpointError, TrainConfig, TrainingDiverged, fit
from xdt_nb.transfer import predict_file, save_model

LABELS = ['negative', 'neutral', 'positive']

def run_main(*args) -> tuple[int, str]:
    "`xdt ARGS` in this process: its exit status and what it printed to stderr."
    err = io.StringIO()
    with contextlib.redirect_stderr(err): status = main([str(a) for a in args])
    return status, err.getvalue()

@pytest.fixture(scope='module')
def model_dir(tmp_path_factory) -> Path:
    "A saved (untrained) classifier: what `xdt predict` loads."
    return save_model(load_classifier(LABELS), load_tokenizer(), tmp_path_factory.mktemp('saved')/'model')

# --- xdt predict, as a new user meets it -------------------------------------------------------------------

def test_predict_unreadable_files(tmp_path, model_dir):
    "Header only (was IndexError), empty (was pandas' 'No columns to parse'), another encoding: the fix."
    (tmp_path/'header.csv').write_text('text\n')
    (tmp_path/'empty.csv').write_bytes(b'')
    (tmp_path/'latin.csv').write_bytes('text\ncafé au lait très bon\n'.encode('iso-8859-1'))
    out = tmp_path/'out.csv'
    status, err = run_main('predict', model_dir, tmp_path/'header.csv', out)
    assert status == 2 and "has no rows under its header ['text']. Fix: add one row" in err, err
    status, err = run_main('predict', model_dir, tmp_path/'empty.csv', out)
    assert status == 2 and 'empty.csv is empty. Fix: write a header line' in err, err
    status, err = run_main('predict', model_dir, tmp_path/'latin.csv', out)
    # the fix in the command line's terms, not Python's (encoding='iso-8859-1')
    assert status == 2 and "Fix: pass the file's encoding, e.g. --encoding='iso-8859-1'." in err, err
    assert not out.exists()
    assert run_main('predict', model_dir, tmp_path/'latin.csv', out, '--encoding', 'iso-8859-1')[0] == 0
    assert pd.read_csv(out).text.tolist() == ['café au lait très bon']

def test_predict_never_overwrites_input_or_output(tmp_path, model_dir):
    "`xdt predict MODEL in.csv in.csv` used to replace the input with the predictions."
    data = tmp_path/'in.csv'
    data.write_text('text\nGreat phone.\nAwful battery.\n')
    before = data.read_bytes()
    r = xdt('predict', model_dir, data, data)
    assert r.returncode == 2 and 'is the input file' in r.stderr, r.stderr
    assert 'Fix: name another output file' in r.stderr
    assert data.read_bytes() == before
    out = tmp_path/'out.csv'
    out.write_text('my own notes\n')
    status, err = run_main('predict', model_dir, data, out)
    assert status == 2 and 'Fix: name another output file, or pass --overwrite to replace it.' in err, err
    assert out.read_text() == 'my own notes\n'
    assert run_main('predict', model_dir, data, out, '--overwrite')[0] == 0
    assert pd.read_csv(out).text.tolist() == ['Great phone.', 'Awful battery.']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in.csv', 'out.csv']   # no temporary file left

# --- broken or mismatched files on disk ---------------------------------------------------------------

def copy_model(model_dir, to) -> Path:
    to.mkdir()
    for f in model_dir.iterdir(): (to/f.name).write_bytes(f.read_bytes())
    return to

def test_saved_model_corrupt_or_mismatched(tmp_path, model_dir):
    "Cut short, another encoder's weights, another label count: refused, naming the file; no output written."
    data = tmp_path/'in.csv'
    data.write_text('text\nfine\n')
    cut = copy_model(model_dir, tmp_path/'cut')
    weights = (cut/'model.safetensors').read_bytes()
    (cut/'model.safetensors').write_bytes(weights[:len(weights) // 2])
    other = copy_model(model_dir, tmp_path/'other')   # the same numbers under another encoder's names
    save_file({k.replace('bert.', 'roberta.'): v for k, v in load_file(other/'model.safetensors').items()},
              other/'model.safetensors')
    two = copy_model(model_dir, tmp_path/'two')
    config = json.loads((two/'config.json').read_text())
    (two/'config.json').write_text(json.dumps(config | dict(id2label={'0': 'bad', '1': 'good'},
                                                             label2id={'bad': 0, 'good': 1})))
    for folder, expected in [(cut, 'could not be loaded'), (other, 'other/model.safetensors does not fit'),
                             (two, 'two/model.safetensors does not fit')]:
        with pytest.raises(ValueError, match=expected) as e:
            predict_file(folder, data, tmp_path/'out.csv')
        assert 'Fix:' in str(e.value)
        assert not (tmp_path/'out.csv').exists()

@pytest.fixture(scope='module')
def tiny_task():
    "(train, dev) of a few amazon reviews: enough for a few steps of `fit`."
    rows = load_domain('amazon').groupby('label').head(8)
    return rows.iloc[::2], rows.iloc[1::2]

def quick_fit(tiny_task, out_dir, labels=LABELS, on_eval=None, **cfg):
    "`fit` on `tiny_task`, checkpoints in `out_dir`, resuming if one is there."
    train, dev = tiny_task
    cfg = TrainConfig(**dict(epochs=1, batch_size=4, lr=1e-4, eval_steps=1, seed=0) | cfg)
    return fit(load_classifier(labels), load_tokenizer(), labels, train, dev, cfg=cfg, out_dir=out_dir,
               resume=True, on_eval=on_eval)

def checkpoint_bytes(ckpt) -> dict:
    return {f.name: f.read_bytes() for f in sorted(ckpt.iterdir())}

def test_training_checkpoint_corrupt_or_mismatched(tmp_path, tiny_task):
    "A resumed run refuses a broken checkpoint with the file and the fix, and rewrites none of it."
    out = tmp_path/'run'
    quick_fit(tiny_task, out)
    ckpt = out/'checkpoint'
    good = checkpoint_bytes(ckpt)
    def refused(expected, **kw):
        before = checkpoint_bytes(ckpt)
        with pytest.raises(CheckpointError, match=expected) as e: quick_fit(tiny_task, out, **kw)
        assert 'Fix: ' in str(e.value)
        assert checkpoint_bytes(ckpt) == before   # nothing overwritten
    refused(r'belongs to a different run \(differs in: labels\)', labels=LABELS[::-1])
    (ckpt/'model.safetensors').write_bytes(good['model.safetensors'][:1000])   # cut short
    refused('checkpoint/model.safetensors is missing, corrupt or incomplete')
    # another encoder's weights (here: names and shapes of none of this model's)
    save_file({'roberta.embeddings.weight': torch.zeros(2, 2)}, ckpt/'model.safetensors')
    refused('checkpoint/model.safetensors does not fit the model')
    (ckpt/'model.safetensors').write_bytes(good['model.safetensors'])
    (ckpt/'state.pt').unlink()
    refused('checkpoint/state.pt is missing')

# --- a diverging run ---------------------------------------------------------------------------------------

def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_task, monkeypatch):
    "A NaN loss in epoch 2 stops the run with the fix; the checkpoint of epoch 1 stays as it was, finite."
    import xdt_nb.train as train
    real_step_loss, losses = train.step_loss, []
    def nan_from_epoch_two(run, streams, p):
        losses.append(real_step_loss(run, streams, p))
        return losses[-1] * (float('nan') if len(losses) > run.plan.steps_per_epoch else 1.0)
    monkeypatch.setattr(train, 'step_loss', nan_from_epoch_two)
    out, after_epoch_one = tmp_path/'run', {}
    def keep_checkpoint(history): after_epoch_one.update(checkpoint_bytes(out/'checkpoint'))
    diverged = r'Training diverged: the loss is nan at step \d+ .* Fix: a smaller'
    with pytest.raises(TrainingDiverged, match=diverged):
        quick_fit(tiny_task, out, epochs=2, on_eval=keep_checkpoint)
    ckpt = out/'checkpoint'
    assert checkpoint_bytes(ckpt) == after_epoch_one
    assert torch.load(ckpt/'state.pt', weights_only=True)['epoch'] == 0
    assert all(torch.isfinite(w).all() for w in load_file(ckpt/'model.safetensors').values())

def test_learning_rate_1e3_stops_with_a_clear_error(tmp_path):
    "`xdt train --lr 1000`: one line in the command line's terms; no metrics.json, so no NaN in one."
    out = tmp_path/'run'
    r = xdt('train', 'amazon', '--n-labels', 48, '--epochs', 1, '--batch-size', 4, '--lr', 1000,
            '--out-dir', out)
    assert r.returncode == 2 and 'xdt: error: Training diverged: the loss is' in r.stderr, r.stderr
    assert '(learning rate --lr=1000' in r.stderr and 'leave out --lr' in r.stderr, r.stderr
    assert not (out/'metrics.json').exists() and not (out/'records.jsonl').exists()

# --- two runs writing at once ------------------------------------------------------------------------------

RECORD = dict(notebook='t', task='sentiment', dataset='amazon', source='tweets', target='amazon',
              method='joint', n_target_labels=8, model='m', accuracy=0.5, macro_f1=0.5, weighted_f1=0.5,
              train_seconds=1.0)

def append_many(path, writer:int, start):
    start.wait()   # all at once
    # lines far longer than a write buffer: a writer that sent one in pieces would let another cut in
    # (one that wrote 1000 characters at a time spoilt 42 of 200 lines here)
    for n in range(50): append_record(path, RECORD | dict(seed=writer, command=f'{n} ' + 'x' * 100_000))

def test_concurrent_appends_to_one_store(tmp_path):
    "Four processes append to one records.jsonl at once: every record arrives, whole, once."
    store = tmp_path/'records.jsonl'
    fork = multiprocessing.get_context('fork')
    start = fork.Event()
    procs = [fork.Process(target=append_many, args=(store, w, start)) for w in range(4)]
    for p in procs: p.start()
    start.set()
    for p in procs: p.join()
    assert [p.exitcode for p in procs] == [0] * 4
    rows = [json.loads(line) for line in store.read_text().splitlines()]
    assert sorted((r['seed'], int(r['command'].split()[0])) for r in rows) == [(w, n) for w in range(4)
                                                                                 for n in range(50)]

# --- a run killed mid-epoch, then resumed -------------------------------------------------------------

def small_file(folder) -> Path:
    "100 training sentences (with batches of 2, 50 steps an epoch: the default eval_steps checkpoints every "
    "epoch), a dev and a test split of 12: a run of seconds."
    amazon = load_domain('amazon')
    parts = [amazon[amazon.split == split].groupby('label').head(n) for split, n in
             [('train', 34), ('dev', 4), ('test', 4)]]
    table = pd.concat(parts)[['text', 'label', 'split']].rename(columns={'split': 'part'})
    table.iloc[2:].to_csv(folder/'reviews.csv', index=False)   # 100 train rows
    return folder/'reviews.csv'

def test_kill_9_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    "`kill -9` in epoch 2, `--resume`: the same metrics and weights as a run never stopped."
    train = ['train', small_file(tmp_path), '--split-col', 'part', '--epochs', 2, '--batch-size', 2,
             '--seed', 1]
    whole, killed = tmp_path/'whole', tmp_path/'killed'
    r = xdt(*train, '--out-dir', whole)
    assert r.returncode == 0, r.stderr[-2000:]
    run = subprocess.Popen([XDT, *map(str, train), '--out-dir', str(killed)],
                           env=os.environ | {'XDT_PROGRESS': '0'}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    state, t0 = killed/'checkpoint'/'state.pt', time.time()
    while not state.exists() and run.poll() is None and time.time() - t0 < 600: time.sleep(0.05)
    time.sleep(0.5)   # into epoch 2
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, 'the run ended before it could be killed: make it longer'
    assert torch.load(state, weights_only=True)['epoch'] == 0   # the checkpoint on disk is whole
    assert not (killed/'metrics.json').exists()
    r = xdt(*train, '--out-dir', killed, '--resume')
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = [read_json(d/'metrics.json') for d in (whole, killed)]
    same = lambda m: {k: v for k, v in m.items() if k != 'record'}
    assert same(metrics[0]) == same(metrics[1])
    for key in ('macro_f1', 'accuracy', 'epochs', 'best_epochs'):
        assert metrics[0]['record'][key] == metrics[1]['record'][key], key
    weights = [load_file(d/'model'/'model.safetensors') for d in (whole, killed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

# --- the loaders, fuzzed -----------------------------------------------------------------------------------

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SUFFIXES = st.sampled_from(['.csv', '.tsv', '.jsonl'])

def read_or_refuse(path, loaders=(read_table, load_table, read_labelled_file)):
    "The table the `loaders` accept, or None when one refuses it with the package's own error."
    try:
        rows = [load(path) for load in loaders][0]
    except ValueError as e:
        # the package's own error (pandas' and the codecs' are subclasses) naming the file, never a traceback
        assert type(e) is ValueError and str(path) in str(e), repr(e)
        return None
    return rows

@FUZZ
@given(raw=st.binary(max_size=400), suffix=SUFFIXES, bom=st.booleans())
def test_loaders_on_random_bytes(tmp_path, raw, suffix, bom):
    f = tmp_path/f'fuzz{suffix}'
    f.write_bytes(b'\xef\xbb\xbf' * bom + raw)
    read_or_refuse(f)

# any character but lone surrogates (no encoding can write them) and NUL
CHARACTER = st.characters(blacklist_categories=['Cs'], blacklist_characters='\x00')
CELL = st.text(CHARACTER, max_size=12)
HEADERS = st.lists(st.sampled_from(['text', 'label', 'split', 'review', 'text']), min_size=1, max_size=4)

@FUZZ
@given(header=HEADERS, rows=st.lists(st.lists(CELL | st.integers().map(str), max_size=5), max_size=6),
       suffix=st.sampled_from(['.csv', '.tsv']), newline=st.sampled_from(['\n', '\r\n']), quote=st.booleans())
def test_loaders_on_odd_tables(tmp_path, header, rows, suffix, newline, quote):
    "Missing, extra and duplicated columns, ragged rows, stray quotes, CRLF, numbers as labels."
    sep = ',' if suffix == '.csv' else '\t'
    def line(cells): return sep.join(f'"{c}"' if quote else c for c in cells)
    f = tmp_path/f'odd{suffix}'
    f.write_text(newline.join(map(line, [header, *rows])), encoding='utf-8', newline='')
    read_or_refuse(f)

TEXT = st.text(CHARACTER, min_size=1, max_size=30)

@FUZZ
@given(rows=st.lists(st.tuples(TEXT, st.sampled_from(LABELS) | st.integers(0, 5)), min_size=1, max_size=12),
       suffix=SUFFIXES, crlf=st.booleans(), bom=st.booleans())
def test_every_accepted_file_round_trips_its_rows(tmp_path, rows, suffix, crlf, bom):
    "A table written by pandas (quoted as needed, any newline, with or without a BOM) reads back row for row."
    table = pd.DataFrame(rows, columns=['text', 'label'])
    f = tmp_path/f'rows{suffix}'
    if suffix == '.jsonl': text = table.to_json(orient='records', lines=True, force_ascii=False)
    # every text quoted: pandas' default leaves a lone carriage return bare, which readers take as a line end
    else: text = table.to_csv(sep=',' if suffix == '.csv' else '\t', index=False,
                              quoting=csv.QUOTE_NONNUMERIC, lineterminator='\r\n' if crlf else '\n')
    f.write_bytes(text.encode('utf-8-sig' if bom else 'utf-8'))
    back = read_or_refuse(f, [read_table])
    assert back is not None, f.read_text()
    # read a few rows at a time (as `xdt predict` reads), the same rows
    pd.testing.assert_frame_equal(pd.concat(read_table_chunks(f, chunk_rows=3), ignore_index=True), back)
    assert back.text.tolist() == table.text.tolist()
    assert back.label.astype(str).tolist() == table.label.astype(str).tolist()

# --- offline ------------------------------------------------------------------------------------------------

def test_the_network_is_blocked():
    "pytest-socket (addopts in pyproject.toml): a connection beyond this machine fails at once, loudly."
    from pytest_socket import SocketConnectBlockedError
    with pytest.raises(SocketConnectBlockedError): socket.create_connection(('93.184.215.14', 443), timeout=5)

def test_a_hub_call_fails_fast(tmp_path):
    "With HF_HUB_OFFLINE=1 (conftest) a download is refused at once instead of waiting on the network."
    from huggingface_hub import constants, hf_hub_download
    assert constants.HF_HUB_OFFLINE
    t0 = time.time()
    with pytest.raises(Exception, match='cannot find the requested files in the local cache'):
        hf_hub_download('sentence-transformers/all-MiniLM-L6-v2', 'config.json', cache_dir=tmp_path)
    assert time.time() - t0 < 5

# --- xdt run, failing ---------------------------------------------------------------------------------------

def test_xdt_run_failure_names_notebook_cell_and_error(tmp_path):
    "A failing cell: one line with the notebook, the cell and the error; the partial notebook is kept."
    import nbformat
    (tmp_path/'settings.ini').write_text('[xdt_nb]\n')
    (tmp_path/'nbs').mkdir()
    cells = [nbformat.v4.new_code_cell(src) for src in ('ran = 1', "raise ValueError('boom')", 'never = 1')]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path/'nbs'/'broken.ipynb')
    r = xdt('run', 'broken', '--out-dir', tmp_path/'out', cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert ("xdt: error: Notebook broken failed in cell 1 (\"raise ValueError('boom')\"): ValueError: boom."
            in r.stderr), r.stderr
    partial = nbformat.read(tmp_path/'out'/'broken.ipynb', as_version=4)
    executed = [c.source for c in partial.cells if c.get('execution_count')]
    assert executed[:2] == ['ran = 1', "raise ValueError('boom')"], executed
