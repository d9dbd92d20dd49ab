"""Semantic mutants: one-line breakages of what the course teaches, each run against the claim tests.

    python tests/mutation/semantic_mutants.py [--out results/mutation]

Each mutant is applied to a copy of `xdt_nb/` in a temporary folder (the working tree is never touched),
`pytest tests/test_claims.py -x` runs against that copy, and the mutant is killed when a test fails.
Writes `semantic.md` and `semantic.json` under `--out`; exits 1 if any mutant survives.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (name, file, the line as it is, the line broken): each `old` must occur exactly once in its file
MUTANTS = [
    ('alpha -> 0: the source loss is dropped', 'train.py',
     "'source': schedule_value(cfg.alpha_schedule, cfg.alpha, p)}", "'source': 0.0}"),
    ('alpha schedule ignored (always constant)', 'train.py',
     "schedule_value(cfg.alpha_schedule, cfg.alpha, p)", "schedule_value('constant', cfg.alpha, p)"),
    ('lambda -> 0: no adversarial gradient', 'train.py',
     "lam = schedule_value('ganin', cfg.adversarial, p)", "lam = 0.0"),
    ('gradient reversal without the reversal (sign flipped)', 'adversarial.py',
     "return -ctx.lam * grad, None", "return ctx.lam * grad, None"),
    ('domain features detached from the encoder', 'train.py',
     "feats.append(mean_pool(out.hidden_states[-1], b['attention_mask']).float())",
     "feats.append(mean_pool(out.hidden_states[-1], b['attention_mask']).detach().float())"),
    ('class weights never applied', 'train.py',
     "if cfg.class_weights and p.weight != 'none'", "if False and p.weight != 'none'"),
    ('the last weights, not the best dev ones, are returned', 'train.py',
     "run.acc.unwrap_model(run.model).load_state_dict(progress.best)\n    return FitResult", "return FitResult"),
    ('early stopping off', 'train.py',
     "return self.bad >= patience", "return False"),
    ('layer-wise learning-rate decay off', 'train.py',
     "lr=cfg.lr * cfg.layer_lr_decay ** below", "lr=cfg.lr"),
    ('gradual unfreezing off', 'train.py',
     "if run.plan.unfreeze_every: freeze_untrained(run.opt, step)", "pass"),
    ('resume does not restore the random state', 'train.py',
     "_set_rng_state(st['rng'])", "pass"),
    ('sequential: the target stage starts from a fresh model', 'finetune.py',
     "second = _fit_stage(t, first.model, first.tokenizer,", "second = _fit_stage(t, *t.new_model(),"),
    ('sequential: keep_start dropped', 'finetune.py',
     "_target_stage(t) | dict(keep_start=True)", "_target_stage(t) | dict(keep_start=False)"),
    ('joint_select keeps the worst alpha', 'finetune.py',
     "best = max(range(len(runs))", "best = min(range(len(runs))"),
    ('dann without the adversarial term', 'finetune.py',
     "adversarial=t.cfg.adversarial or 1.0", "adversarial=0.0"),
    ('few_shot draws without stratifying', 'registry.py',
     "    counts = df.label.value_counts()\n    quota", "    return df.sample(n, random_state=seed).reset_index(drop=True)\n    quota"),
    ('self_train keeps every pseudo-label, confident or not', 'self_training.py',
     "rows = confident_rows(proba, SELF_TRAIN_SHARE)", "rows = np.arange(len(pool))"),
    ('label_shift_em keeps the source priors', 'label_shift.py',
     "priors = em_priors(proba(unlabelled_texts), source_priors)", "priors = source_priors"),
    ('lexicon_ensemble: the model alone', 'lexicon.py',
     "_lexicon_expert(t.source_dev, t.labels), 0.5)", "_lexicon_expert(t.source_dev, t.labels), 1.0)"),
    ('linear_probe without class balancing', 'finetune.py',
     "class_weight='balanced', C=1.0", "C=1.0"),
    ('macro-F1 over the classes present only', 'train.py',
     "labels=list(range(n_classes)), average='macro'", "average='macro'"),
]

def run_mutant(name, file, old, new, tmp:Path) -> dict:
    "Apply one mutant to a fresh copy of the package under `tmp`, run the claim tests; what happened."
    pkg = tmp/'xdt_nb'
    if pkg.exists(): shutil.rmtree(pkg)
    shutil.copytree(ROOT/'xdt_nb', pkg)
    src = (pkg/file).read_text()
    if src.count(old) != 1: raise SystemExit(f"Mutant {name!r}: its line occurs {src.count(old)} times in {file}; fix MUTANTS.")
    (pkg/file).write_text(src.replace(old, new))
    env = os.environ | dict(PYTHONPATH=str(tmp), XDT_PROGRESS='0')
    t0 = time.time()
    r = subprocess.run([sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', str(ROOT/'tests/test_claims.py')],
                       capture_output=True, text=True, env=env, cwd=tmp)
    failed = [l.split(' ')[1].split('::')[-1] for l in r.stdout.splitlines() if l.startswith('FAILED ')]
    return dict(mutant=name, file=file, killed=r.returncode != 0, killed_by=failed[0] if failed else '',
                seconds=round(time.time() - t0, 1))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'results/mutation'))
    args = ap.parse_args()
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # the copy must be what the tests import, not the editable install
        shutil.copytree(ROOT/'xdt_nb', Path(tmp)/'xdt_nb')
        where = subprocess.run([sys.executable, '-c', 'import xdt_nb; print(xdt_nb.__file__)'], capture_output=True, text=True,
                               env=os.environ | dict(PYTHONPATH=tmp), cwd=tmp).stdout.strip()
        if not where.startswith(tmp): raise SystemExit(f"The tests would import {where}, not the mutated copy in {tmp}.")
        rows = []
        for m in MUTANTS:
            rows.append(run_mutant(*m, Path(tmp)))
            print(f"{'killed ' if rows[-1]['killed'] else 'SURVIVED'} {rows[-1]['seconds']:6.1f}s  {m[0]}  {rows[-1]['killed_by']}", flush=True)
    killed = sum(r['killed'] for r in rows)
    (out/'semantic.json').write_text(json.dumps(dict(command='python tests/mutation/semantic_mutants.py', killed=killed,
                                                     total=len(rows), mutants=rows), indent=1) + '\n')
    lines = [f'# Semantic mutants: {killed} of {len(rows)} killed by `make test-claims`', '',
             'Made by `make semantic-mutants` (`tests/mutation/semantic_mutants.py`); each row one line of the library broken.', '',
             '| mutant | file | killed | first failing test | seconds |', '|---|---|---|---|---|']
    lines += [f"| {r['mutant']} | {r['file']} | {'yes' if r['killed'] else '**no**'} | {r['killed_by']} | {r['seconds']} |" for r in rows]
    (out/'semantic.md').write_text('\n'.join(lines) + '\n')
    print(f'{killed} of {len(rows)} semantic mutants killed; {out}/semantic.md')
    sys.exit(0 if killed == len(rows) else 1)

if __name__ == '__main__': main()
