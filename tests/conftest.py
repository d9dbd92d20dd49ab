"Shared helpers of the regression tests: the `xdt` command line, strict JSON, a headless notebook run."
import json, os, subprocess, sys
from pathlib import Path
import pytest

# before anything imports huggingface_hub (it reads this once): a hub call fails at once instead of waiting on
# the network, in this process and in every `xdt` it starts
os.environ['HF_HUB_OFFLINE'] = '1'

ROOT = Path(__file__).resolve().parents[1]
XDT = str(Path(sys.executable).parent/'xdt')

def xdt(*args, cwd=ROOT):
    "Run the `xdt` command line; the CompletedProcess."
    env = os.environ | {'XDT_PROGRESS': '0'}
    return subprocess.run([XDT, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)

def read_json(path):
    "The JSON object in `path`, strictly: a bare `NaN` or `Infinity` (Python's default, not JSON) fails the test."
    def not_json(token): pytest.fail(f'{path} holds {token}, which is not JSON (jq and browsers reject it); write it with xdt_nb.core.write_json.')
    return json.loads(Path(path).read_text(), parse_constant=not_json)

def xdt_ok(args, params):
    "`xdt ARGS -p k v ...` with each parameter as a Python literal; fails the test with the notebook's error if it fails."
    for k, v in params.items(): args += ['-p', k, repr(v)]
    r = xdt(*args)
    assert r.returncode == 0, r.stderr[-3000:]

def run_headless(notebook, params, out):
    "`xdt run notebook -p k v ...` into `out` (a hung cell fails in 30 min, not at the CI job's limit)."
    xdt_ok(['run', notebook, '--out-dir', out, '--timeout', 1800], params)
    return out

def run_study(phase, params, folder):
    "`xdt study 11_cross_domain PHASE --dir folder -p ...`; the report folder it wrote."
    xdt_ok(['study', '11_cross_domain', phase, '--dir', folder, '--timeout', 1800], params)
    return next((folder/'reports').iterdir())
