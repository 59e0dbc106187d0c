"""scripts/gpu_check.sh --tiny: the GPU check script runs end to end on a CPU (so it cannot rot)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_script_runs_on_cpu_with_tiny_shapes(tmp_path):
    env = {**os.environ, "GPU_CHECK_DIR": str(tmp_path), "OMP_NUM_THREADS": "1", "MASTER_PORT": "29777",
           "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}   # the interpreter running the tests
    res = subprocess.run(["bash", "scripts/gpu_check.sh", "--tiny"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = [line.split() for line in res.stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert len(rows) == 2 and all(float(r[1]) > 0 and float(r[6]) > 0 for r in rows)   # rollout s, tok/s


def test_gpu_check_script_calls_the_interpreter_it_is_given():
    # a bare `python` is whatever PATH finds first, not the venv's interpreter that runs the tests
    with open(os.path.join(ROOT, "scripts", "gpu_check.sh")) as f:
        lines = [line for line in f if not line.lstrip().startswith("#")]
    assert not [line for line in lines if line.split()[:1] == ["python"]], "use \"$PY\" (${PYTHON:-python})"
    assert any('"$PY"' in line for line in lines)
