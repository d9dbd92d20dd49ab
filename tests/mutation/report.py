"""The mutation score of the claim tests, from the state `mutmut run` leaves in `mutants/`.

    python tests/mutation/report.py [--out results/mutation]

Writes `mutmut.md` (score per file, every survivor with file, line and change) and `mutmut.json`.
Docstring lines are never mutated (`do_not_mutate_patterns`); `equivalent.tsv` beside this script lists the
mutants judged equivalent by hand, one line each with why.
"""
import argparse, ast, csv, difflib, json, re
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parents[2]
# keyword arguments that only style a figure: a mutant confined to one of them changes how it looks, not what it shows
STYLE = re.compile(r'\b(figsize|fontsize|cmap|color|lw|ls|c|ec|rotation|labelrotation|capsize|dpi|fraction|ha|va)=')

def _arg_end(line:str, i:int) -> int:
    "Index just past the keyword argument's value starting at `i` (at the comma or bracket that closes it)."
    depth = 0
    for j in range(i, len(line)):
        if line[j] in '([{': depth += 1
        elif line[j] in ')]}':
            if depth == 0: return j
            depth -= 1
        elif line[j] == ',' and depth == 0: return j
    return len(line)

def style_only(old:str, new:str) -> bool:
    "Whether `new` differs from `old` only inside (or by dropping) one figure-styling keyword argument."
    a = 0
    while a < min(len(old), len(new)) and old[a] == new[a]: a += 1
    b = 0
    while b < min(len(old), len(new)) - a and old[-1 - b] == new[-1 - b]: b += 1
    lo, hi = a, len(old) - b   # the changed span of `old`
    return any(m.start() <= lo and hi <= _arg_end(old, m.end()) + 2 for m in STYLE.finditer(old))

def function_lines(path:Path) -> dict:
    "First line of every function of `path`, by mutmut's name for it (`x_fn`, `xǁClassǁmethod`)."
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            for f in node.body:
                if isinstance(f, ast.FunctionDef): out[f'xǁ{node.name}ǁ{f.name}'] = f.lineno
        elif isinstance(node, ast.FunctionDef) and node.col_offset == 0: out[f'x_{node.name}'] = node.lineno
    return out

def mutant_changes(module:str) -> dict:
    "For each mutant of `xdt_nb/<module>.py`: (line in the original file, old line, new line)."
    lines = (ROOT/'mutants/xdt_nb'/f'{module}.py').read_text().splitlines()
    spans = json.loads((ROOT/'mutants/xdt_nb'/f'{module}.py.spans').read_text())['spans']
    starts = function_lines(ROOT/'xdt_nb'/f'{module}.py')
    def body(name):   # the function's lines with its `def` renamed back, and where the `def` line is among them
        a, b = spans[name]
        text = [l.replace(name, 'FN') for l in lines[a - 1:b]]
        return text, next(i for i, l in enumerate(text) if 'def FN(' in l)
    out = {}
    for name in spans:
        if name.endswith('__mutmut_orig'): continue
        fn = name.rsplit('__mutmut_', 1)[0]
        (orig, d), (mut, _) = body(fn + '__mutmut_orig'), body(name)
        ops = [op for op in difflib.SequenceMatcher(None, orig, mut, autojunk=False).get_opcodes() if op[0] != 'equal']
        _, i1, i2, j1, j2 = ops[0]
        out[f'xdt_nb.{module}.{name}'] = (starts[fn] + i1 - d, ' '.join(orig[i1:i2]).strip(), ' '.join(mut[j1:j2]).strip())
    return out

def sample_estimate(rows:list, sample:Path) -> dict:
    "Kill rate in the sample (Wilson 95% interval) and the score if the never-run mutants were killed at that rate."
    names = set(sample.read_text().split())
    ran = [r for r in rows if r['mutant'] in names and r['status'] != 'not run']
    n, k = len(ran), sum(r['status'] == 'killed' for r in ran)
    if n == 0: return None
    z, p = 1.96, k / n
    mid, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5 / (1 + z * z / n)
    judged = [r for r in rows if r['status'] != 'equivalent']
    killed, rest = sum(r['status'] == 'killed' for r in judged), sum(r['status'] == 'not run' for r in judged)
    at = lambda rate: (killed + rate * rest) / len(judged)
    return dict(sample=len(names), ran=n, killed=k, rate=p, low=mid - half, high=mid + half, not_run=rest,
                score=at(p), score_low=at(mid - half), score_high=at(mid + half))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT/'results/mutation'))
    ap.add_argument('--sample', help='file of mutant names: a seeded random sample of the mutants a run had not reached, run alone')
    args = ap.parse_args()
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    by_hand = {r['mutant']: r['why'] for r in csv.DictReader(open(Path(__file__).with_name('equivalent.tsv')), delimiter='\t')}
    rows = []
    for meta in sorted((ROOT/'mutants/xdt_nb').glob('*.py.meta')):
        module = meta.name.removesuffix('.py.meta')
        changes = mutant_changes(module)
        for key, code in json.loads(meta.read_text())['exit_code_by_key'].items():
            line, old, new = changes[key]
            status = 'not run' if code is None else status_by_exit_code[code]
            why = by_hand.get(key)
            if status != 'killed' and why: status = 'equivalent'
            elif status == 'survived' and style_only(old, new) and '.x_plot_' in key:
                status, why = 'style', 'changes only a figure\'s styling (size, font, colour, line, rotation), not what it shows'
            rows.append(dict(mutant=key, file=f'xdt_nb/{module}.py', line=line, status=status, old=old, new=new, why=why or ''))
    counts = Counter(r['status'] for r in rows)
    judged = len(rows) - counts['equivalent']
    score = counts['killed'] / judged if judged else float('nan')
    score_no_style = counts['killed'] / (judged - counts['style']) if judged > counts['style'] else float('nan')
    estimate = sample_estimate(rows, Path(args.sample)) if args.sample else None
    (out/'mutmut.json').write_text(json.dumps(dict(command='make mutate', score=round(score, 4), score_without_style=round(score_no_style, 4), estimate=estimate, counts=counts, mutants=rows), indent=1) + '\n')
    per_file = Counter((r['file'], r['status']) for r in rows)
    files = sorted({r['file'] for r in rows})
    kinds = ['killed', 'survived', 'style', 'no tests', 'timeout', 'not run', 'equivalent']
    md = [f"# Mutation score of `make test-claims`: {score:.1%} of the non-equivalent mutants killed", '',
          f"`make mutate` (mutmut over {', '.join(f'`{f}`' for f in files)}); {len(rows)} mutants, "
          f"{counts['equivalent']} equivalent. 'no tests': no claim test runs that function at all. 'style': a surviving "
          f"mutant that only restyles a figure; counted as not killed. Without those: {score_no_style:.1%}.", '',
          '| file | ' + ' | '.join(kinds) + ' | score |', '|---' * (len(kinds) + 2) + '|']
    for f in files:
        n = {k: per_file[(f, k)] for k in kinds}
        s = n['killed'] / max(1, sum(n.values()) - n['equivalent'])
        md.append(f'| {f} | ' + ' | '.join(str(n[k]) for k in kinds) + f' | {s:.1%} |')
    if estimate: md += ['', f"**Not run: {estimate['not_run']}.** A seeded random sample (`{args.sample}`) of {estimate['sample']} of the mutants the "
                         f"run had not reached was run alone: {estimate['killed']} killed ({estimate['rate']:.0%}, 95% interval "
                         f"{estimate['low']:.0%}–{estimate['high']:.0%}). Counting the rest at that rate, the whole score would be "
                         f"{estimate['score']:.1%} ({estimate['score_low']:.1%}–{estimate['score_high']:.1%})."]
    for title, kept in (('Survivors', ('survived', 'timeout', 'suspicious', 'no tests')), ('Survivors that only restyle a figure', ('style',))):
        md += ['', f'## {title}', '', '| file:line | mutant | from | to |', '|---|---|---|---|']
        md += [f"| {r['file']}:{r['line']} | {r['mutant'].split('.')[-1]} | `{r['old'][:90]}` | `{r['new'][:90]}` |"
               for r in rows if r['status'] in kept]
    md += ['', '## Judged equivalent by hand', '', '| mutant | why |', '|---|---|']
    md += [f"| {r['mutant']} | {r['why']} |" for r in rows if r['status'] == 'equivalent']
    (out/'mutmut.md').write_text('\n'.join(md) + '\n')
    print(f"{score:.1%} killed of {judged} non-equivalent mutants ({dict(counts)}); {out}/mutmut.md")

if __name__ == '__main__': main()
