"""scripts/gpu_check.sh 1|2 --tiny: the GPU check script's two parts run end to end on a CPU (so they cannot
rot), each logging to a file."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gpu_check(tmp_path, *argv):
    env = {**os.environ, "GPU_CHECK_DIR": str(tmp_path), "OMP_NUM_THREADS": "1", "MASTER_PORT": "29777",
           "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}   # the interpreter running the tests
    env.pop("OUT", None)
    return subprocess.run(["bash", "scripts/gpu_check.sh", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_gpu_check_script_runs_on_cpu_with_tiny_shapes(tmp_path):
    res = gpu_check(tmp_path, "1", "--tiny")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = [line.split() for line in res.stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert len(rows) == 2 and all(float(r[1]) > 0 and float(r[6]) > 0 for r in rows)   # rollout s, tok/s
    assert "fast: eager steps" in res.stdout and "FAILED" not in res.stdout
    with open(tmp_path / "gpu_check_part1.log") as f:
        assert f.read() == res.stdout                                  # the log file holds the whole report
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_gpu_check_part_two_runs_the_cuda_tests_and_a_bad_argument_is_refused(tmp_path):
    res = gpu_check(tmp_path, "2", "--tiny")
    assert res.returncode == 0 and "skipped" in res.stdout and "part 2: 0 failed" in res.stdout, res.stdout[-3000:]
    res = gpu_check(tmp_path, "1", "--tiny", "--bogus")
    assert res.returncode == 2 and "usage" in res.stdout


def test_gpu_check_script_calls_the_interpreter_it_is_given():
    # a bare `python` is whatever PATH finds first, not the venv's interpreter that runs the tests
    with open(os.path.join(ROOT, "scripts", "gpu_check.sh")) as f:
        lines = [line for line in f if not line.lstrip().startswith("#")]
    assert not [line for line in lines if line.split()[:1] == ["python"]], "use \"$PY\" (${PYTHON:-python})"
    assert any('"$PY"' in line for line in lines)
