"""The site's three steps on small notebooks and pages built here: execute once, render, check in Chromium.

`make docs-check` runs these after the site is built (the Chromium tests borrow its MathJax); `make
test-regression` leaves them out, as Chromium is installed only by `make docs-check`.
"""
import json
import shutil
import sys
from pathlib import Path

import pytest
from fastcore.nbio import mk_cell, new_nb, read_nb, write_nb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools.build_site import site_nb  # noqa: E402
from tools.check_site import check_site  # noqa: E402
from tools.execute_nbs import execute_nb  # noqa: E402

FLAGS = dict(skip_flags=['slow', 'gpu'], force_flags=[], cell_timeout=60)
PLOT = 'import matplotlib.pyplot as plt\nplt.plot([1, 2]);'


def notebook(path, *cells):
    "A notebook at `path` of `cells` (source strings; a tuple is (source, cell type) or (source, tags))."
    made = []
    for cell in cells:
        source, extra = cell if isinstance(cell, tuple) else (cell, None)
        made.append(mk_cell(source, cell_type='markdown' if extra == 'markdown' else 'code'))
        if isinstance(extra, list):
            made[-1].metadata['tags'] = extra
    write_nb(new_nb(made), path)
    return path


def with_output(nb_path, source_end, markdown):
    "The notebook at `nb_path`, its cell whose source ends in `source_end` showing `markdown` (as show_doc)."
    nb = read_nb(nb_path)
    cell = next(c for c in nb.cells if c.source.endswith(source_end))
    cell.outputs = [{'output_type': 'execute_result', 'execution_count': 1, 'metadata': {},
                     'data': {'text/markdown': markdown, 'text/plain': '<ShowDoc>'}}]
    return nb


def outputs(nb_path):
    "The outputs of each code cell of the notebook at `nb_path`, in order."
    return [c['outputs'] for c in json.loads(nb_path.read_text())['cells'] if c['cell_type'] == 'code']


def test_execute_keeps_outputs_and_skips_as_nbdev_test(tmp_path):
    src = notebook(tmp_path/'01_x.ipynb', '#| default_exp x',
                   '#| export\ndef twice(x:int): # a number\n    "Twice `x`."\n    return 2 * x',
                   'print(twice(21))', PLOT, '#| eval: false\nraise ValueError("not run")',
                   '#| slow\nraise ValueError("not run either")')
    out = tmp_path/'executed'
    out.mkdir()
    passed, _ = execute_nb(src, out, **FLAGS)
    assert passed
    cells = json.loads((out/src.name).read_text())['cells']
    printed, plotted = outputs(out/src.name)[2:4]
    assert printed[0]['text'] == ['42\n']
    assert 'image/png' in plotted[0]['data']
    reference = [c for c in cells if 'show_doc(twice)' in ''.join(c['source'])]
    assert 'a number' in ''.join(reference[0]['outputs'][0]['data']['text/markdown'])


def test_execute_fails_naming_notebook_cell_and_error(tmp_path, capfd):
    src = notebook(tmp_path/'02_bad.ipynb', 'x = 1', 'raise ValueError("broken on purpose")')
    out = tmp_path/'executed'
    out.mkdir()
    passed, _ = execute_nb(src, out, **FLAGS)
    assert not passed
    err = capfd.readouterr().err
    for part in ('02_bad.ipynb', 'Cell #2', 'ValueError: broken on purpose'):
        assert part in err, err
    assert not (out/src.name).exists()  # no copy without outputs for the site


def test_reference_leaves_out_what_the_run_skips(tmp_path):
    src = notebook(tmp_path/'03_gpu.ipynb', '#| default_exp g', '#| export\ndef cpu(): "On CPU."',
                   '#| export\n#| gpu\nimport torch\ndef on_gpu(): "Needs CUDA."')
    out = tmp_path/'executed'
    out.mkdir()
    assert execute_nb(src, out, **FLAGS)[0]
    sources = [''.join(c['source']) for c in json.loads((out/src.name).read_text())['cells']]
    assert any('show_doc(cpu)' in s for s in sources)
    assert not any('show_doc(on_gpu)' in s for s in sources)


def test_page_source_strips_directives_hides_and_folds_solutions(tmp_path):
    executed = notebook(tmp_path/'04_page.ipynb',
                        ('# Page\n\n> Read [next](05_next.ipynb#part) first.', 'markdown'),
                        '#| default_exp page', '#| hide\nsecret = 1', '#| export\ndef f(): pass',
                        '#| echo: false\n#| output: asis\nf()',
                        ('answer = 6 * 7\nprint(answer)', ['solution']))
    show_doc_output = '[source](x.py#L1){target="_blank" style="float:right"}\n### f'
    nb = with_output(executed, 'f()', show_doc_output)
    nb.cells[-1].outputs = [{'output_type': 'stream', 'name': 'stdout', 'text': '42\n'}]  # the solution printed
    write_nb(nb, executed)
    page = site_nb(executed)
    sources = [c.source for c in page.cells]
    assert not any('#|' in s or 'secret' in s for s in sources), sources
    assert 'def f(): pass' in sources
    assert '[next](05_next.html#part)' in sources[0]
    shown = next(c for c in page.cells if c.source == 'f()')
    assert shown.metadata['tags'] == ['remove_input']  # show_doc's output stays, its call goes
    assert shown.outputs[0]['data']['text/markdown'] == '[source](x.py#L1)\n### f'  # no Quarto attributes
    folded = page.cells[-1]
    assert folded.cell_type == 'markdown' and folded.source.startswith('<details class="solution">')
    assert 'answer = 6 * 7' in folded.source and '<pre><code>42\n</code></pre>' in folded.source


SCRIPT_ERROR = '<p>Fine text.</p><script>not_defined_anywhere()</script>'
MATH = '<p>The loss $L_t + \\alpha L_s$.</p>'
MATHJAX = '<script src="assets/mathjax-config.js"></script>'


@pytest.fixture
def site(tmp_path):
    "A site of one page per case, beside the built site's MathJax (`make docs` first)."
    assets = ROOT/'_site'/'assets'
    if not (assets/'mathjax-config.js').exists():
        pytest.fail('No built site: run `make docs` before these tests (make docs-check does).')
    if not (shutil.which('chromium') and shutil.which('chromedriver')):
        pytest.fail('No chromium or chromedriver: `make docs-check` installs them and runs these tests.')
    (tmp_path/'site').mkdir()
    (tmp_path/'site'/'assets').symlink_to(assets)
    pages = {'index': '<p>Home</p>', 'good': MATH + MATHJAX, 'script_error': SCRIPT_ERROR,
             'untypeset': MATH, 'no_figure': '<p>The plot was lost.</p>',
             'dead_link': '<a href="good.html">fine</a> <a href="03_gone.html#top">gone</a>',
             'remote': '<img src="https://cdn.example.invalid/plot.png" alt="plot">'}
    for name, body in pages.items():
        (tmp_path/'site'/f'{name}.html').write_text(f'<!doctype html><html><body>{body}</body></html>')
    for folder in ('src', 'notebooks'):
        (tmp_path/folder).mkdir()
    # the notebook of the page that lost its figure, executed as for the site
    assert execute_nb(notebook(tmp_path/'src'/'no_figure.ipynb', PLOT), tmp_path/'notebooks', **FLAGS)[0]
    return tmp_path


def test_check_flags_each_broken_page_and_passes_the_good_one(site):
    problems, n_pages = check_site(site/'site', site/'notebooks', site/'check')
    assert n_pages == 7
    broken = ['dead_link.html', 'no_figure.html', 'remote.html', 'script_error.html', 'untypeset.html']
    assert sorted(problems) == broken, problems
    assert problems['dead_link.html'] == [f'link to a missing file: {(site/"site"/"03_gone.html").as_uri()}']
    assert 'not_defined_anywhere' in problems['script_error.html'][0]
    assert 'none typeset' in problems['untypeset.html'][0]
    assert '1 figures in the notebook, 0 images shown' in problems['no_figure.html'][0]
    assert 'loads from the network: https://cdn.example.invalid/plot.png' in problems['remote.html']
    assert (site/'check'/'index.png').stat().st_size > 1000
