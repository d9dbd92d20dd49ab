"The package as a user gets it: Colab badge and install cell in every notebook; a wheel holding the package."
import importlib.util, json, os, subprocess, sys, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import colab_cells

OTHER_URL = 'https://github.com/someone-else/fork'


def test_every_notebook_has_the_current_colab_cells():
    assert colab_cells.stale_notebooks() == [], 'run `make colab`'


def test_badge_and_install_cell_follow_the_url_in_pyproject():
    url = colab_cells.repository_url()
    notebooks = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))
    # a notebook whose cells name another repository is stale
    assert colab_cells.stale_notebooks(url=OTHER_URL) == notebooks
    nb = json.loads((ROOT/'nbs/07_demo.ipynb').read_text())
    badge, install = (''.join(c['source']) for c in nb['cells'][1:3])
    colab = url.replace('github.com', 'colab.research.google.com/github')
    assert f'{colab}/blob/main/nbs/07_demo.ipynb' in badge
    assert f"repository, colab_clone = '{url}'" in install


def test_repository_url_must_be_github(tmp_path):
    pyproject = tmp_path/'pyproject.toml'
    pyproject.write_text('[project.urls]\nRepository = "https://gitlab.com/a/b"\n')
    with pytest.raises(ValueError, match='GitHub only'): colab_cells.repository_url(pyproject)


def test_the_tool_adds_cells_once_after_the_title(tmp_path):
    title = dict(cell_type='markdown', id='t', metadata={}, source=['# A later notebook\n', '> one line'])
    body = dict(cell_type='code', id='b', metadata={}, source=['1 + 1'], execution_count=None, outputs=[])
    nb = dict(cells=[title, body], metadata={}, nbformat=4, nbformat_minor=5)
    (tmp_path/'20_new.ipynb').write_text(json.dumps(nb))
    assert colab_cells.stale_notebooks(tmp_path, OTHER_URL, fix=True) == ['20_new.ipynb']
    first = (tmp_path/'20_new.ipynb').read_text()
    # a second run finds nothing to do and leaves the file as it was
    assert colab_cells.stale_notebooks(tmp_path, OTHER_URL, fix=True) == []
    assert (tmp_path/'20_new.ipynb').read_text() == first
    cells = json.loads(first)['cells']
    assert [c['id'] for c in cells] == ['t', colab_cells.BADGE_ID, colab_cells.INSTALL_ID, 'b']


def test_a_notebook_without_a_title_cell_is_refused(tmp_path):
    body = dict(cell_type='code', id='b', metadata={}, source=['1 + 1'], execution_count=None, outputs=[])
    (tmp_path/'x.ipynb').write_text(json.dumps(dict(cells=[body], metadata={}, nbformat=4, nbformat_minor=5)))
    with pytest.raises(ValueError, match="Fix: start the notebook with its title cell"):
        colab_cells.stale_notebooks(tmp_path, OTHER_URL)


def _run_install_cell(monkeypatch, installed:bool, on_colab:bool) -> tuple[list, list]:
    "Run the install cell, `xdt_nb` importable or not, on Colab or not: commands it ran, folders it entered."
    commands, folders = [], []
    monkeypatch.delenv('XDT_OFFLINE', raising=False)
    monkeypatch.setattr(subprocess, 'run', lambda cmd, **kw: commands.append(cmd))
    monkeypatch.setattr(os, 'chdir', folders.append)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda *args: find_spec(*args) if installed else None)
    if on_colab: monkeypatch.setitem(sys.modules, 'google.colab', object())
    exec(colab_cells.install_source(OTHER_URL), {})
    return commands, folders


def test_install_cell_does_nothing_where_the_package_is_installed(monkeypatch):
    assert _run_install_cell(monkeypatch, installed=True, on_colab=False) == ([], [])
    assert 'XDT_OFFLINE' not in os.environ


def test_install_cell_without_the_package_installs_it_from_the_repository_and_goes_online(monkeypatch):
    [pip], folders = _run_install_cell(monkeypatch, installed=False, on_colab=False)
    assert pip[1:3] == ['-m', 'pip'] and pip[-1] == f'xdt_nb[kg] @ git+{OTHER_URL}'
    assert folders == []
    assert os.environ['XDT_OFFLINE'] == '0'


def test_install_cell_on_colab_works_in_a_clone_of_the_repository(monkeypatch):
    # Colab has only the notebook: the clone gives it settings.ini and the committed results, as locally
    [clone, pip], folders = _run_install_cell(monkeypatch, installed=False, on_colab=True)
    assert clone[:2] == ['git', 'clone'] and OTHER_URL in clone
    assert folders == [f'{clone[-1]}/nbs']
    assert pip[-1] == f'xdt_nb[kg] @ git+{OTHER_URL}'
    assert os.environ['XDT_OFFLINE'] == '0'


def test_the_wheel_holds_every_file_of_the_package(tmp_path):
    # the package opens no file of its own at run time (no package data): its modules are all it needs
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
                    '-w', str(tmp_path), str(ROOT)], check=True, cwd=tmp_path)
    [wheel] = tmp_path.glob('xdt_nb-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(['git', 'ls-files', 'xdt_nb'], cwd=ROOT, capture_output=True, text=True).stdout
    assert set(tracked.split()) <= names
    entry_points = next(n for n in names if n.endswith('.dist-info/entry_points.txt'))
    assert 'xdt = xdt_nb.cli:main' in zipfile.ZipFile(wheel).read(entry_points).decode()
