"""The course site's pages, from the executed notebooks: `make docs` runs this, then `mkdocs build`.

Each executed copy in `_build/executed/` (written by `tools/execute_nbs.py`) becomes a page source in
`_build/site_src/`: nbdev's `#|` lines stripped, `#| hide` cells dropped (nbdev's own processors), the
`show_doc` cells' source hidden (their output is the API reference), exercise solutions (code cells tagged
`solution`) folded into a `<details>` block, links to notebooks pointed at their pages, the Colab badge's image from the site itself, and no widget state
(its JavaScript would come from a CDN).
MathJax 3 and material's search shim come from npm into the site: every page opens from `file://` offline.
"""
import argparse
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

from fastcore.nbio import mk_cell, write_nb
from nbdev.process import NBProcessor
from nbdev.processors import hide_

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT/'_build'/'executed'
SITE_SRC = ROOT/'_build'/'site_src'
NPM = ROOT/'_build'/'npm'
# pinned like constraints.txt; iframe-worker lets material's search run from file:// (mkdocs.yml `polyfills`)
NPM_PACKAGES = ['mathjax@3.2.2', 'iframe-worker@1.0.4']


def hide_input(cell):
    "Tag a cell whose directives say `echo: false` (nbdev's `show_doc` cells): the page shows its output."
    if cell.cell_type == 'code' and cell.directives_.get('echo') == 'false':
        cell.metadata.setdefault('tags', []).append('remove_input')


def drop_empty(cell):
    "Drop a code cell that held only directives (`#| default_exp ...`) and printed nothing."
    if cell.cell_type == 'code' and not cell.source.strip() and not cell.get('outputs'):
        del cell['source']


# a markdown link to a course notebook, `[03_train](03_train.ipynb#the-loop)`: its page is `03_train.html`
NOTEBOOK_LINK = re.compile(r'\]\(([\w.-]+)\.ipynb(#[^)]*)?\)')


def link_pages(cell):
    "Point the prose's links to other notebooks at their pages."
    if cell.cell_type == 'markdown':
        cell.source = NOTEBOOK_LINK.sub(r'](\1.html\2)', cell.source)


# show_doc's link to the source carries pandoc attributes, `[source](URL){target="_blank" ...}`, for Quarto
PANDOC_ATTRIBUTES = re.compile(r'(\]\([^)]*\))\{[^}]*\}')


# the Colab badge's image lives on Google's server: the site shows its own copy (the link still opens Colab)
COLAB_BADGE = 'https://colab.research.google.com/assets/colab-badge.svg'


def local_badge(cell):
    "Show the Colab badge from the site's assets, so a page opened offline loads nothing from the network."
    if cell.cell_type == 'markdown':
        cell.source = cell.source.replace(COLAB_BADGE, 'assets/colab-badge.svg')


def drop_pandoc_attributes(cell):
    "Markdown outputs as plain markdown: nbconvert would print show_doc's `{target=...}` as text."
    for output in cell.get('outputs', []):
        markdown = output.get('data', {}).get('text/markdown')
        if markdown:
            output['data']['text/markdown'] = PANDOC_ATTRIBUTES.sub(r'\1', ''.join(markdown))


def drop_timing(cell):
    "Drop execnb's timing, a number where nbformat (and so nbconvert) wants text."
    cell.metadata.pop('execution', None)


def output_html(output):
    "One output of a solution cell as HTML: its PNG as an image, else its text."
    data = output.get('data', {})
    if 'image/png' in data:
        png = ''.join(data['image/png']).replace('\n', '')
        return f'<img src="data:image/png;base64,{png}" alt="figure"/>'
    text = ''.join(output.get('text') or data.get('text/plain') or output.get('traceback') or [])
    return f'<pre><code>{html.escape(text)}</code></pre>' if text else ''


def fold_solution(cell):
    "A code cell tagged `solution` as a folded `<details>` block: the student tries first, then opens it."
    if cell.cell_type != 'code' or 'solution' not in cell.metadata.get('tags', []):
        return cell
    outputs = '\n'.join(output_html(o) for o in cell.get('outputs', []))
    return mk_cell(f'<details class="solution"><summary>Solution</summary>\n\n'
                   f'```python\n{cell.source}\n```\n\n{outputs}\n\n</details>', cell_type='markdown')


def site_nb(executed_path):
    "The page source of the executed notebook at `executed_path`."
    procs = [hide_, hide_input, drop_empty, drop_timing, link_pages, local_badge, drop_pandoc_attributes]
    nb = NBProcessor(executed_path, procs=procs, rm_directives=True, process=True).nb
    nb.cells = [fold_solution(cell) for cell in nb.cells]
    nb.metadata.pop('widgets', None)
    return nb


def install_assets(site_src):
    "MathJax 3 (with its config) and material's file:// search shim, from npm once, into the site's assets."
    modules = NPM/'node_modules'
    if not all((modules/name.rsplit('@', 1)[0]).exists() for name in NPM_PACKAGES):
        NPM.mkdir(parents=True, exist_ok=True)
        subprocess.run(['npm', 'install', '--prefix', str(NPM), '--no-audit', '--no-fund', *NPM_PACKAGES],
                       check=True)
    assets = site_src/'assets'
    shutil.copytree(modules/'mathjax'/'es5', assets/'mathjax')
    shutil.copy(ROOT/'tools'/'site_assets'/'mathjax-config.js', assets)
    shutil.copy(ROOT/'tools'/'site_assets'/'colab-badge.svg', assets)
    (assets/'iframe-worker').mkdir()
    shutil.copy(modules/'iframe-worker'/'shim'/'index.js', assets/'iframe-worker'/'shim.js')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--executed', type=Path, default=EXECUTED, help='folder of the executed notebooks')
    parser.add_argument('--out', type=Path, default=SITE_SRC, help="folder of the pages' sources")
    args = parser.parse_args(argv)
    executed = sorted(args.executed.glob('*.ipynb'))
    if not executed:
        sys.exit(f'No executed notebooks in {args.executed}: '
                 'run `make test-notebooks` (tools/execute_nbs.py) first.')
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    for path in executed:
        write_nb(site_nb(path), args.out/path.name)
    install_assets(args.out)
    print(f'{len(executed)} pages in {args.out}')


if __name__ == '__main__':
    main()
