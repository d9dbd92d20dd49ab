"""Execute every notebook once, as `nbdev-test` does, and keep the executed copies for the site.

`make test-notebooks` runs this instead of `nbdev-test`: the notebooks are the tests, and the same run
leaves a copy of each with its outputs (tables, printed numbers, PNG figures) under `_build/executed/`,
which `make docs` renders. The cells run are nbdev's own choice: each copy goes through nbdev's
`test_nb`, with `IN_TEST=1`, `#| eval: false` cells and the `tst_flags` cells (`slow gpu`) skipped unless
`--flags` names them. Each copy first gets an API reference at its end, nbdev's `show_doc` cell for every
exported function (its `add_show_docs` processor), so the site's API reference is executed in the same run.
"""
import argparse
import shutil
import sys
from pathlib import Path

from fastcore.nbio import mk_cell, write_nb
from fastcore.parallel import parallel
from nbdev.config import get_config
from nbdev.doclinks import nbglob
from nbdev.process import NBProcessor
from nbdev.processors import add_show_docs, clean_show_doc
from nbdev.test import _skip_cell, test_nb

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT/'_build'/'executed'
SHOW_DOC_IMPORT = '#| hide\nfrom nbdev.showdoc import show_doc'
API_REFERENCE = '## API reference\n\nWhat this notebook exports, with its parameters (nbdev\'s `show_doc`).'


def with_api_reference(nb_path, skip_flags, force_flags):
    "The notebook at `nb_path` closed by its API reference: nbdev's `show_doc` of each exported name defined."
    nb = NBProcessor(nb_path, procs=[add_show_docs, clean_show_doc], rm_directives=False, process=True).nb
    skipped = _skip_cell(nb, skip_flags, force_flags)
    # add_show_docs puts each show_doc right under its exported cell; at the end, every name it documents
    # exists (a dataclass's annotation may name a class defined further down)
    body, reference, defined = [], [], True
    for cell in nb.cells:
        if cell.get('has_sd'):
            reference += [cell] if defined else []
        else:
            body.append(cell)
            defined = not skipped(cell)
    if reference:
        body += [mk_cell(API_REFERENCE, cell_type='markdown'), mk_cell(SHOW_DOC_IMPORT)] + reference
    nb.cells = body
    return nb


def execute_nb(nb_path, out_dir, skip_flags, force_flags, cell_timeout):
    "Write `nb_path`'s copy into `out_dir`, run it there with nbdev's `test_nb`; the copy keeps its outputs."
    copy = Path(out_dir)/Path(nb_path).name
    write_nb(with_api_reference(nb_path, skip_flags, force_flags), copy)
    # test_nb runs the copy in its own folder, `_build/executed/`: the course's paths do not depend on it
    # (settings.ini and the project root are found from there upwards, as from nbs/)
    passed, secs = test_nb(copy, skip_flags=skip_flags, force_flags=force_flags, basepath=ROOT, save=True,
                           cell_timeout=cell_timeout)
    if not passed:
        copy.unlink()  # a copy without its outputs must not reach the site
    return passed, secs


def notebooks(path=None):
    "The notebooks `nbdev-test` takes from `path` (default: nbs/), in file-name order: the reading order."
    return sorted(nbglob(path or get_config().nbs_path, as_path=True))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('path', nargs='?', help='a notebook or folder (default: nbs/)')
    parser.add_argument('--flags', default='', help='space separated tst_flags to run, as nbdev-test --flags')
    parser.add_argument('--n-workers', type=int, default=2, help='notebooks run at once')
    parser.add_argument('--out', type=Path, default=EXECUTED, help='folder of the executed copies')
    args = parser.parse_args(argv)
    cfg = get_config()
    files = notebooks(args.path)
    if not files:
        sys.exit(f'No notebooks in {args.path}: pass a notebook or a folder of them.')
    if args.path is None:
        shutil.rmtree(args.out, ignore_errors=True)  # a full run leaves no copy of a removed notebook
    args.out.mkdir(parents=True, exist_ok=True)
    results = parallel(execute_nb, files, out_dir=args.out, skip_flags=cfg.tst_flags.split(),
                       force_flags=args.flags.split(), cell_timeout=cfg.cell_timeout or None,
                       n_workers=args.n_workers if len(files) > 1 else 0)
    for (passed, secs), nb_path in sorted(zip(results, files), key=lambda r: -r[0][1]):
        print(f'{nb_path.name}: {secs:.0f} s{"" if passed else "  FAILED (traceback above)"}')
    failed = [nb_path.name for (passed, _), nb_path in zip(results, files) if not passed]
    if failed:
        sys.exit(f'Notebooks failed: {", ".join(failed)}')
    print(f'{len(files)} notebooks executed into {args.out}')


if __name__ == '__main__':
    # the workers find `execute_nb` by its module's name, and in a worker that has run a notebook, `__main__`
    # is IPython's (its shell replaces it): run the imported module, as nbdev-test runs nbdev.test's `test_nb`
    sys.path.insert(0, str(ROOT))
    from tools.execute_nbs import main as imported_main
    imported_main()
