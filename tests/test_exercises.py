"""The exercises that close the teaching notebooks, in the one format the site and CI rely on (issue 44).

`nbdev-test` runs the solutions; these checks keep the shape: a `## Exercises` section last, 2-4 exercises,
each a predict-first question followed by one solution cell that is tagged, collapsed, not exported and
ends with a check of the predicted outcome. They read the notebooks' JSON only (well under a second).
"""
import ast, json, re, tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTION_METADATA = {'tags': ['solution'], 'jupyter': {'source_hidden': True}}
# notebooks that must end with exercises (others that have a section are checked too)
WITH_EXERCISES = ['01_data', '02_model', '02a_adversarial', '03_train', '03a_pretrain', '04_evaluate',
                  '05_transfer', '05a_finetune', '05b_label_shift', '05c_self_training', '05d_lexicon',
                  '05e_label_free', '08_store', '09_analysis', '10_math', '11_cross_domain', '14_medical', '14a_medical_images',
                  '14b_knowledge_injection', '15_gpu_training', '16_feedback', '91_article_code']


def cells(name): return json.loads((ROOT/'nbs'/f'{name}.ipynb').read_text(encoding='utf-8'))['cells']
def source(cell): return ''.join(cell['source'])


def exercise_section(name) -> list:
    "The cells after the `## Exercises` heading (None when the notebook has no such section)."
    heads = [i for i, c in enumerate(cells(name))
             if c['cell_type'] == 'markdown' and source(c).startswith('## Exercises')]
    return cells(name)[heads[0] + 1:] if heads else None


def is_check(node) -> bool:
    "An `assert` or a fastcore check (`test_eq`, `test_close`, `test_fail`, ...) anywhere in `node`."
    return any(isinstance(n, ast.Assert) or (isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                                             and n.func.id.startswith('test_')) for n in ast.walk(node))


def ends_with_check(code:str) -> bool:
    "The solution's last top-level statements are a check, then at most some `del` clean-up."
    body = ast.parse(code).body
    while body and isinstance(body[-1], ast.Delete): body = body[:-1]
    return bool(body) and is_check(body[-1])


ALL = sorted({p.stem for p in (ROOT/'nbs').glob('*.ipynb') if exercise_section(p.stem) is not None}
             | set(WITH_EXERCISES))


@pytest.mark.parametrize('name', ALL)
def test_exercise_format(name):
    section = exercise_section(name)
    assert section is not None, f'{name}: no "## Exercises" section at the end'
    assert len(section) % 2 == 0, f'{name}: each exercise is one question cell and one solution cell'
    questions, solutions = section[::2], section[1::2]
    assert 2 <= len(questions) <= 4, f'{name}: {len(questions)} exercises; the course asks for 2 to 4'
    for n, (question, solution) in enumerate(zip(questions, solutions), 1):
        text, code, where = source(question), source(solution), f'{name} exercise {n}'
        assert question['cell_type'] == 'markdown', f'{where}: the question is a markdown cell'
        assert text.startswith(f'**Exercise {n}.**'), f'{where}: starts {text[:40]!r}'
        assert '*Predict first:*' in ' '.join(text.split()), f'{where}: the question asks for a prediction'
        assert solution['cell_type'] == 'code', f'{where}: one solution cell under the question'
        assert solution['metadata'] == SOLUTION_METADATA, f'{where}: the solution is tagged and collapsed'
        assert not re.search(r'^#\|', code, re.M), f'{where}: a solution is neither exported nor hidden'
        assert ends_with_check(code), f'{where}: the solution must end with a check of the prediction'


def test_ends_with_check_needs_a_check():
    assert ends_with_check('x = 1\nassert x == 1\ndel x')
    assert ends_with_check('with open(f) as g:\n    test_eq(g.read(), "")')
    assert not ends_with_check('assert True\nprint(1)')
    assert not ends_with_check('x = 1')


def test_nbdev_clean_keeps_collapsed_solutions():
    "nbdev-clean drops cell metadata it is not told to keep: without `jupyter`, solutions would unfold."
    nbdev = tomllib.loads((ROOT/'pyproject.toml').read_text())['tool']['nbdev']
    assert {'tags', 'jupyter'} <= set(nbdev['allowed_cell_metadata_keys'])
