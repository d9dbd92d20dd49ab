"""One-off: move the records of results/11_cross_domain/<chunk>/records.jsonl into one study store.

    python tools/migrate_chunks.py results/11_cross_domain results/11_cross_domain/records.jsonl

Records are appended in the order of their `run_id` (stable), so the last-written record of a key is the
latest run, as `drop_repeats` chose before. Each keeps every field it had, and gains its key and spec, the
commit that added its chunk (`git_sha`; `dirty` unknown), the chunk's machine and start time, and
`migrated_from`. Prints the counts.
"""
import json, subprocess, sys
from pathlib import Path
from xdt_nb.evaluate import append_record, read_jsonl
from xdt_nb.store import SCHEMA, record_spec, spec_key
from xdt_nb import __version__

def added_in(path):
    out = subprocess.run(['git', 'log', '--diff-filter=A', '--format=%H', '--', str(path)], capture_output=True, text=True)
    return out.stdout.split()[-1] if out.stdout.split() else None

def machine(run):
    m = run.get('machine') or {}
    return f"{m.get('platform', '?')} · {m.get('cpu_cores', '?')} CPU cores · {m.get('gpu') or 'no GPU'}" if m else None

def main(root, store):
    root, store = Path(root), Path(store)
    if store.exists(): sys.exit(f'{store} exists: migrate into a new file.')
    rows = []
    for f in sorted(root.glob('*/records.jsonl')):
        run = json.loads((f.parent/'run.json').read_text()) if (f.parent/'run.json').exists() else {}
        stamp = dict(schema=SCHEMA, xdt_nb=__version__, machine=machine(run), recorded_at=run.get('started'),
                     git_sha=added_in(f), dirty=None, migrated_from=str(f))
        rows += [r | stamp for r in read_jsonl(f)]
    rows.sort(key=lambda r: r.get('run_id') or '')
    for r in rows:
        spec = record_spec(r)
        append_record(store, r | dict(key=spec_key(spec), spec=spec))
    keys = {spec_key(record_spec(r)) for r in rows}
    print(f'{len(rows)} records from {len(list(root.glob("*/records.jsonl")))} chunks -> {store}: {len(keys)} keys')

if __name__ == '__main__': main(*sys.argv[1:])
