"""checkpoint.py and train.py's resume: tampered or damaged checkpoints are refused and the
previous one is used; rotation never deletes the newest, nor the newest known good; --resume PATH;
a resumed run logs each step once; a diverging run stops; fp32 master weights under bf16 compute;
a full or read-only disk, a bad config.json or an --out_dir that is a file stop in one line with
nothing lost; the torch-private names this file relies on."""
import dataclasses
import errno
import hashlib
import io
import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file

import checkpoint
import rollout
from test_distributed import metrics, run, train_args


@pytest.fixture(scope="module")
def saved_run(tiny, toy_data, tmp_path_factory):
    """A 2-step run with a checkpoint after each step (step_000001, step_000002)."""
    out = str(tmp_path_factory.mktemp("ck") / "run")
    run(train_args(tiny[2], toy_data[1], toy_data[2], out, steps=2, extra=["--save_every", "1", "--keep", "3"]))
    return out


def fresh(tiny):
    model, _ = rollout.load_model(tiny[2], "float32", "cpu")
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def test_a_dotted_global_in_the_metadata_pickle_is_refused(tmp_path):
    """Protocol 4 lets a pickle name module `torch.distributed.checkpoint.filesystem` and the
    attribute path `os.system`: a module-prefix allow-list would hand it os.system."""
    marker = tmp_path / "pwned"
    def short(s):
        b = s.encode()
        return b"\x8c" + bytes([len(b)]) + b
    evil = (b"\x80\x04" + short("torch.distributed.checkpoint.filesystem") + b"\x94" + short("os.system") + b"\x94"
            + b"\x93" + short(f"touch {marker}") + b"\x85R.")
    (tmp_path / ".metadata").write_bytes(evil)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        checkpoint.check_metadata(str(tmp_path))
    assert not marker.exists()

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    (tmp_path / ".metadata").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        checkpoint.check_metadata(str(tmp_path))
    assert not marker.exists()


def _flip(path):
    data = bytearray(open(path, "rb").read())
    for i in range(min(4096, len(data))):
        data[len(data) // 2 + i - min(4096, len(data)) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    "bit-flipped shard": lambda d: _flip(os.path.join(d, "__0_0.distcp")),
    "truncated shard": lambda d: _truncate(os.path.join(d, "__0_0.distcp")),
    "deleted shard": lambda d: os.remove(os.path.join(d, "__0_0.distcp")),
    "truncated .metadata": lambda d: _truncate(os.path.join(d, ".metadata")),
    "empty .metadata": lambda d: open(os.path.join(d, ".metadata"), "w").close(),
    "deleted .metadata": lambda d: os.remove(os.path.join(d, ".metadata")),
    "deleted extra_rank0.pt": lambda d: os.remove(os.path.join(d, "extra_rank0.pt")),
    "deleted manifest": lambda d: os.remove(os.path.join(d, "manifest.json")),
    "garbage manifest": lambda d: open(os.path.join(d, "manifest.json"), "w").write("{not json"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(damage, saved_run, tiny, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    shutil.copytree(saved_run, run_dir)
    newest = os.path.join(run_dir, "checkpoints", "step_000002")
    DAMAGE[damage](newest)
    assert checkpoint.verify(newest) is not None
    model, opt = fresh(tiny)
    assert checkpoint.load(run_dir, model, opt) == 1
    assert "step_000002 skipped" in capsys.readouterr().out


@pytest.mark.parametrize("latest", ["garbage\x00\x01", "", "../../etc", "step_000009"])
def test_a_bad_latest_pointer_does_not_matter(latest, saved_run, tiny, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(saved_run, run_dir)
    open(os.path.join(run_dir, "checkpoints", "latest"), "w").write(latest)
    model, opt = fresh(tiny)
    assert checkpoint.load(run_dir, model, opt) == 2


def test_the_loaded_weights_are_the_saved_ones(saved_run, tiny):
    model, opt = fresh(tiny)
    assert checkpoint.load(saved_run, model, opt) == 2
    final = load_file(os.path.join(saved_run, "final", "model.safetensors"))
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in final.items())


def test_rotation_keeps_the_newest_and_latest_points_at_it(tiny, tmp_path):
    model, opt = fresh(tiny)
    for step in (1, 2, 3):
        checkpoint.save(str(tmp_path), step, model, opt, keep=1)
    ck = tmp_path / "checkpoints"
    assert sorted(d for d in os.listdir(ck) if d.startswith("step_")) == ["step_000003"]
    assert (ck / "latest").read_text() == "step_000003"
    assert checkpoint.verify(str(ck / "step_000003")) is None


def test_resume_drops_metrics_after_the_checkpoint_and_logs_each_step_once(saved_run, tiny, toy_data, tmp_path):
    """What a crash after step 2's metrics but before its checkpoint leaves behind."""
    run_dir = str(tmp_path / "run")
    shutil.copytree(saved_run, run_dir)
    shutil.rmtree(os.path.join(run_dir, "checkpoints", "step_000002"))
    out = run(train_args(tiny[2], toy_data[1], toy_data[2], run_dir, steps=2,
                         extra=["--save_every", "1", "--keep", "3", "--resume"]))
    assert "resumed from" in out and "step_000001" in out
    steps = [(m["step"], "reward" in m, bool(m.get("final"))) for m in metrics(run_dir)]
    assert len(steps) == len(set(steps))
    assert [s for s, r, _ in steps if r] == [1, 2]


def test_resume_refuses_a_changed_data_order_or_algorithm(saved_run, tiny, toy_data, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(saved_run, run_dir)
    with pytest.raises(AssertionError, match="group_size 4 -> 2"):
        run(train_args(tiny[2], toy_data[1], toy_data[2], run_dir, steps=3,
                       extra=["--resume", "--group_size", "2", "--algo", "grpo"]))


def test_resume_without_a_checkpoint_says_so(tiny, toy_data, tmp_path):
    out = run(train_args(tiny[2], toy_data[1], toy_data[2], str(tmp_path / "new"), steps=1,
                         extra=["--resume", "--no_export"]))
    assert "no valid checkpoint" in out


def _stop_line(e):
    return next(line for line in str(e.value).splitlines() if "train.py: stopped" in line)


def test_a_diverging_run_stops_with_an_error_and_exports_nothing(tiny, toy_data, tmp_path):
    """At lr 1e3 the first update already breaks the weights (finite, but a saturated softmax), so
    the step_000001 it saves must not be offered as a good one."""
    out = str(tmp_path / "div")
    with pytest.raises(AssertionError, match="diverged") as e:
        run(train_args(tiny[2], toy_data[1], toy_data[2], out, steps=8,
                       extra=["--lr", "1e3", "--warmup_steps", "0", "--max_bad_steps", "2", "--save_every", "1",
                              "--keep", "10"]))
    assert not os.path.exists(os.path.join(out, "final"))
    line = _stop_line(e)
    assert "good step" not in line and "usual range" in line and "from this run's own metrics" in line
    assert "no kept checkpoint is from before it (step_000001" in line and "start over with a lower --lr" in line


def test_after_a_divergence_the_stop_points_at_the_checkpoint_before_the_numbers_left_their_range(
        tiny, toy_data, tmp_path):
    """Two sound steps, then lr 1e3: step 3's update breaks the weights, step 4 trains on them with a
    zero gradient though it has rows to distil, and the stop points at step_000002, not at the
    finite-but-broken step_000003 and later."""
    out = str(tmp_path / "div")
    one_mb = ["--minibatch_prompts", "4", "--warmup_steps", "0", "--save_every", "1", "--keep", "10", "--no_export"]
    run(train_args(tiny[2], toy_data[1], toy_data[2], out, steps=2, extra=one_mb))
    with pytest.raises(AssertionError, match="diverged") as e:
        run(train_args(tiny[2], toy_data[1], toy_data[2], out, steps=10,
                       extra=one_mb + ["--lr", "1e3", "--resume", "--max_bad_steps", "2"]))
    line = _stop_line(e)
    ck = os.path.join(out, "checkpoints")
    assert "good step" not in line and f"The newest checkpoint from before that is {ck}/step_000002 " in line, line
    assert f"rerun with --resume {ck}/step_000002 and a lower --lr (step_000003, " in line, line

    def max_abs(step):
        model, _ = fresh(tiny)
        checkpoint.load_weights(os.path.join(ck, f"step_{step:06d}"), model)
        return max(p.abs().max().item() for p in model.parameters())
    start = max(p.abs().max().item() for p in fresh(tiny)[0].parameters())
    assert max_abs(2) < 2 * start and max_abs(3) > 100 * start      # the one it names is sound, the next is not


def test_the_usual_range_comes_from_the_runs_own_history():
    def recs(norms, **kw):
        return [{"step": i + 1, "grad_norm": g, "skipped": 0, "distilled_frac": 0.5, "div": 0.1, **kw}
                for i, g in enumerate(norms)]
    assert checkpoint.left_usual_range(recs([1.0, 2.0, 0.5, 9.0]), ptd_coef=0.05) == (None, "")
    assert checkpoint.left_usual_range(recs([1.0, 2.0, 0.5, 11.0]), ptd_coef=0.05)[0] == 4       # 10x the median 1.0
    assert checkpoint.left_usual_range(recs([1.0, float("nan")]), ptd_coef=0.05)[0] == 2
    assert checkpoint.left_usual_range(recs([1.0, 1.0]) + [{"step": 3, "grad_norm": 1.0, "skipped": 1}], 0.05)[0] == 3
    assert checkpoint.left_usual_range(recs([1.0, 0.0]), ptd_coef=0.05)[0] == 2       # nothing moves, rows to distil
    assert checkpoint.left_usual_range(recs([1.0, 0.0]), ptd_coef=0.0) == (None, "")   # the divergence has no weight
    assert checkpoint.left_usual_range(recs([0.0, 0.0, 3.0], distilled_frac=0.0), ptd_coef=0.05) == (None, "")
    old = [{k if k != "div" else "jsd": v for k, v in r.items()} for r in recs([1.0, 0.0])]
    assert checkpoint.left_usual_range(old, ptd_coef=0.05)[0] == 2         # a run logged before "div"


def test_bf16_compute_keeps_fp32_master_weights_that_move_at_lr_1e6(tiny, toy_data, tmp_path):
    """At lr 1e-6 an AdamW step is far below half a bf16 ulp: bf16 weights would not move."""
    out = str(tmp_path / "bf16")
    run(train_args(tiny[2], toy_data[1], toy_data[2], out, steps=2,
                   extra=["--dtype", "bfloat16", "--lr", "1e-6", "--warmup_steps", "0", "--kl_coef", "0"]))
    w0 = load_file(os.path.join(tiny[2], "model.safetensors"))
    w1 = load_file(os.path.join(out, "final", "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in w1.values())
    moved = sum(int((w1[k] != w0[k]).sum()) for k in w0)
    assert moved / sum(v.numel() for v in w0.values()) >= 0.9
    import torch.distributed.checkpoint as dcp
    meta = dcp.FileSystemReader(os.path.join(out, "checkpoints", "step_000002")).read_metadata()
    dtypes = {m.properties.dtype for k, m in meta.state_dict_metadata.items() if k.startswith("model.")}
    assert dtypes == {torch.float32}


class Evil:
    """Unpickled by anything that trusts the file, it runs `touch marker`."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _rewrite_manifest(path):
    """What an attacker who can write the folder does next: the manifest is a checksum, not a signature."""
    files = {n: hashlib.sha256((path / n).read_bytes()).hexdigest() for n in os.listdir(path) if n != "manifest.json"}
    (path / "manifest.json").write_text(json.dumps({"files": files}))


def _evil_shard_item(path, marker):
    """Point one pickled (non-tensor) item of the shards at a torch.save of Evil appended to its shard,
    so .metadata stays plain data and every tensor still loads."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata
    buf = io.BytesIO()
    torch.save(Evil(marker), buf)
    md = pickle.load(open(path / ".metadata", "rb"))
    fqn = next(k for k, v in md.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata))
    idx = next(i for i in md.storage_data if i.fqn == fqn)
    shard = path / md.storage_data[idx].relative_path
    offset = shard.stat().st_size
    with open(shard, "ab") as f:
        f.write(buf.getvalue())
    md.storage_data[idx] = dataclasses.replace(md.storage_data[idx], offset=offset, length=len(buf.getvalue()))
    pickle.dump(md, open(path / ".metadata", "wb"))


def test_a_shard_item_that_names_code_is_refused_even_with_a_matching_manifest(tmp_path, capsys):
    """DCP unpickles non-tensor items (optimiser hyper-parameters) from the shards; an attacker
    who rewrites a shard can rewrite the manifest too. The loader must unpickle them as data."""
    marker = tmp_path / "pwned"
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    checkpoint.save(str(tmp_path), 1, model, opt, keep=2)
    path = tmp_path / "checkpoints" / "step_000001"
    _evil_shard_item(path, marker)
    _rewrite_manifest(path)
    assert checkpoint.verify(str(path)) is None                        # the tampering is self-consistent
    m2 = torch.nn.Linear(4, 4)
    with pytest.raises(SystemExit, match="none of the 1 checkpoints"):
        checkpoint.load(str(tmp_path), m2, torch.optim.AdamW(m2.parameters()))
    assert "__0_0.distcp: not plain data: a pickle that names posix.system" in capsys.readouterr().out
    assert not marker.exists()


# every file a checkpoint holds, replaced by a pickle that runs code (as pickle.dumps and as
# torch.save write one), and one pickled item inside the shard; the manifest rewritten to match
CHECKPOINT_FILES = [".metadata", "__0_0.distcp", "extra_rank0.pt", "manifest.json"]
TAMPER = {f"{name} ({how})": (name, how) for name in CHECKPOINT_FILES for how in ("pickle", "torch.save")}
TAMPER["__0_0.distcp (one item)"] = ("__0_0.distcp", "item")


def _tamper(path, name, how, marker):
    if how == "item":
        _evil_shard_item(path, marker)
    elif how == "pickle":
        (path / name).write_bytes(pickle.dumps({"step": 2, "rng": Evil(marker)}))
    else:
        with open(path / name, "wb") as f:     # a file object: torch.save refuses the name ".metadata"
            torch.save({"step": 2, "rng": Evil(marker)}, f)
    if name != "manifest.json":
        _rewrite_manifest(path)


def _state(model, opt):
    """Everything load() restores, as copies: weights, optimiser state, RNG."""
    import copy
    return {"model": {k: v.clone() for k, v in model.state_dict().items()},
            "optim": copy.deepcopy(opt.state_dict()), "rng": torch.get_rng_state().clone()}


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_the_tampering_cases_cover_every_file_a_checkpoint_holds(saved_run):
    assert sorted(os.listdir(os.path.join(saved_run, "checkpoints", "step_000002"))) == sorted(CHECKPOINT_FILES)


@pytest.fixture(scope="module")
def state_at_step_1(saved_run, tiny, tmp_path_factory):
    """What loading the intact step_000001 alone restores."""
    only = str(tmp_path_factory.mktemp("only1") / "run")
    shutil.copytree(saved_run, only)
    shutil.rmtree(os.path.join(only, "checkpoints", "step_000002"))
    model, opt = fresh(tiny)
    assert checkpoint.load(only, model, opt) == 1
    return _state(model, opt)


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_a_file_swapped_for_code_is_refused_in_one_line_and_the_previous_checkpoint_is_loaded(
        case, saved_run, state_at_step_1, tiny, tmp_path, capsys):
    name, how = TAMPER[case]
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    newest = run_dir / "checkpoints" / "step_000002"
    _tamper(newest, name, how, marker)
    model, opt = fresh(tiny)
    torch.manual_seed(12345)
    assert checkpoint.load(str(run_dir), model, opt) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    refusal = [i for i, line in enumerate(lines) if "step_000002 skipped" in line]
    assert len(refusal) == 1 and name in lines[refusal[0]].split(" skipped: ", 1)[1], out
    assert lines[refusal[0] + 1].startswith("resumed from") and "step_000001" in lines[refusal[0] + 1], out
    assert "weights_only" not in out and "Traceback" not in out
    assert _same(_state(model, opt), state_at_step_1)
    assert not marker.exists()


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_a_refused_checkpoint_applies_nothing(case, saved_run, tiny, tmp_path):
    """The tampered checkpoint is the only one: load() stops, and the model, the optimiser and the
    RNG are as they were, though some files (the tensors, the RNG) would have read cleanly."""
    name, how = TAMPER[case]
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "step_000001")
    _tamper(run_dir / "checkpoints" / "step_000002", name, how, marker)
    model, opt = fresh(tiny)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()                                 # an optimiser with state, which a partial load would change
    before = _state(model, opt)
    with pytest.raises(SystemExit, match="none of the 1 checkpoints"):
        checkpoint.load(str(run_dir), model, opt)
    assert _same(_state(model, opt), before)
    with pytest.raises(RuntimeError, match="refusing to load") as e:        # eval.py --checkpoint's loader
        checkpoint.load_weights(str(run_dir / "checkpoints" / "step_000002"), model)
    assert name in str(e.value) and "\n" not in str(e.value) and "weights_only" not in str(e.value)
    assert _same(_state(model, opt), before)
    assert not marker.exists()


def test_after_a_fallback_new_saves_survive_rotation_and_the_damaged_one_is_kept_aside(tiny, tmp_path):
    model, opt = fresh(tiny)
    for step in (20, 40):
        checkpoint.save(str(tmp_path), step, model, opt, keep=2)
    _flip(os.path.join(tmp_path, "checkpoints", "step_000040", "__0_0.distcp"))
    assert checkpoint.load(str(tmp_path), model, opt) == 20
    checkpoint.save(str(tmp_path), 30, model, opt, keep=1)
    names = sorted(os.listdir(tmp_path / "checkpoints"))
    assert "step_000030" in names and "damaged_step_000040" in names and "step_000040" not in names
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_000030"
    assert checkpoint.load(str(tmp_path), model, opt) == 30


def test_resume_refuses_when_no_checkpoint_verifies(tiny, tmp_path):
    model, opt = fresh(tiny)
    checkpoint.save(str(tmp_path), 5, model, opt, keep=2)
    os.remove(tmp_path / "checkpoints" / "step_000005" / "manifest.json")
    with pytest.raises(SystemExit, match="none of the 1 checkpoints"):
        checkpoint.load(str(tmp_path), model, opt)


def test_training_arguments_must_be_finite_and_in_range():
    import config
    for bad in (["--tau", "nan"], ["--top_p", "nan"], ["--lr", "inf"], ["--kv_cache_gb", "inf"], ["--tau", "0"],
                ["--group_size", "1"], ["--temperature", "0"], ["--topk", "0"], ["--steps", "-1"]):
        with pytest.raises(SystemExit):
            config.get_args(bad)
    assert config.get_args(["--topk", "-1"]).topk == -1


# -----------------------------------------------------------------------------
# rotation that keeps the last safe checkpoint, and --resume PATH


def test_rotation_keeps_the_newest_known_good_checkpoint_until_a_newer_one_is(tmp_path):
    """Step 3 left the usual range: step_000001 (step 2 trained on it in range) is the newest known
    good and survives --keep 1; once a run's records vouch for a newer one, the older one goes."""
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    recs = [{"step": s, "grad_norm": g, "skipped": 0} for s, g in ((1, 1.0), (2, 1.0), (3, 50.0), (4, 1.0))]
    for step in (1, 2, 3, 4):
        checkpoint.save(str(tmp_path), step, model, opt, keep=1, records=recs[:step])
    names = sorted(d for d in os.listdir(tmp_path / "checkpoints") if d.startswith("step_"))
    assert names == ["step_000001", "step_000004"]
    ok = [{"step": s, "grad_norm": 1.0, "skipped": 0} for s in (1, 2, 3, 4, 5)]
    checkpoint.save(str(tmp_path), 5, model, opt, keep=1, records=ok)
    names = sorted(d for d in os.listdir(tmp_path / "checkpoints") if d.startswith("step_"))
    assert names == ["step_000004", "step_000005"]          # step_000004 is vouched for by step 5


def test_the_issues_sequence_keeps_a_safe_checkpoint_and_resume_path_continues_from_it(tiny, toy_data, tmp_path):
    """Three steps with --keep 1, then --resume at lr 1e3: step 4 is finite and saved, steps 5-7
    are not. The newest checkpoint from before the divergence (step_000003) must survive, and the
    stop names it with the --resume PATH that continues from it; that resume then works, sets the
    later checkpoint aside, and logs each step once."""
    out = str(tmp_path / "R")
    a = ["--eval_n", "2", "--save_every", "1", "--no_export", "--keep", "1"]
    run(train_args(tiny[2], toy_data[1], toy_data[2], out, steps=3, extra=a))
    with pytest.raises(AssertionError, match="diverged") as e:
        run(train_args(tiny[2], toy_data[1], toy_data[2], out, steps=12,
                       extra=a + ["--lr", "1e3", "--warmup_steps", "0", "--resume"]))
    ck = os.path.join(out, "checkpoints")
    good = os.path.join(ck, "step_000003")
    assert checkpoint.verify(good) is None and os.path.isdir(os.path.join(ck, "step_000004"))
    line = _stop_line(e)
    assert f"The newest checkpoint from before that is {good} " in line and f"--resume {good} and a lower" in line
    resume = train_args(tiny[2], toy_data[1], toy_data[2], out, steps=5,
                        extra=a + ["--warmup_steps", "0", "--resume", good])
    i = resume.index("--out_dir")
    log = run(resume[:i] + resume[i + 2:])                      # PATH names the run: no --out_dir needed
    assert f"resumed from {good} at step 3" in log and "set aside as superseded_step_000004" in log
    assert sorted(os.listdir(ck)) == ["latest", "step_000004", "step_000005", "superseded_step_000004"]
    steps = [m["step"] for m in metrics(out) if "reward" in m]
    assert steps == [1, 2, 3, 4, 5]


def test_resume_path_is_verified_and_refused_in_one_line_without_falling_back(saved_run, tiny, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    chosen = run_dir / "checkpoints" / "step_000001"
    _flip(chosen / "__0_0.distcp")
    model, opt = fresh(tiny)
    with pytest.raises(SystemExit) as e:
        checkpoint.load(str(run_dir), model, opt, path=str(chosen))
    assert f"--resume {chosen}: refused, nothing loaded: __0_0.distcp: sha256 differs" in e.value.code
    assert "\n" not in e.value.code and os.path.isdir(run_dir / "checkpoints" / "step_000002")   # nothing set aside


def test_resume_path_names_a_run_or_a_checkpoint_folder(saved_run, tmp_path):
    step = os.path.join(saved_run, "checkpoints", "step_000001")
    assert checkpoint.resume_target(step) == (saved_run, step)
    assert checkpoint.resume_target(saved_run + "/") == (saved_run, None)
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for bad, why in ((tmp_path / "missing", "no such file"), (tmp_path / "file", "not a folder"),
                     (tmp_path / "empty", "neither a run folder")):
        with pytest.raises(ValueError, match=why):
            checkpoint.resume_target(str(bad))

# -----------------------------------------------------------------------------
# a full disk during a save


def test_a_full_disk_during_a_save_is_one_line_leaves_no_partial_folder_and_keeps_the_last_checkpoint(
        tmp_path, monkeypatch):
    from torch.distributed.checkpoint import filesystem
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    checkpoint.save(str(tmp_path), 1, model, opt, keep=2)
    real = filesystem._write_item

    def full(*a, **k):      # the first item is written, then the disk is full
        real(*a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(filesystem, "_write_item", full)
    with pytest.raises(SystemExit) as e:
        checkpoint.save(str(tmp_path), 2, model, opt, keep=2)
    ck = tmp_path / "checkpoints"
    assert e.value.code == (f"checkpoint: cannot save step 2 in {ck}: No space left on device (errno 28). The partial "
                            f"step_000002.tmp was removed and {ck}/step_000001 is intact: free space there, or choose "
                            f"another --out_dir, then rerun with --resume")
    assert sorted(os.listdir(ck)) == ["latest", "step_000001"] and (ck / "latest").read_text() == "step_000001"
    assert checkpoint.verify(str(ck / "step_000001")) is None

def test_a_full_disk_during_the_export_leaves_no_half_export_and_the_earlier_one_as_it_was(tiny, tmp_path,
                                                                                           monkeypatch):
    model, processor, _ = tiny
    out = tmp_path / "final"
    out.mkdir()
    (out / "model.safetensors").write_text("the earlier export")

    def full(path, **kw):
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "model.safetensors"), "w").write("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(model, "save_pretrained", full)
    with pytest.raises(SystemExit) as e:
        checkpoint.export_hf(model, processor, str(out))
    assert e.value.code.startswith(f"checkpoint: cannot export the final model to {out}: No space left on device")
    assert "\n" not in e.value.code and sorted(os.listdir(tmp_path)) == ["final"]
    assert (out / "model.safetensors").read_text() == "the earlier export"

# -----------------------------------------------------------------------------
# train.py's front door: a run folder that cannot be written or read


@pytest.fixture
def front_door(tiny, toy_data):
    """train.start_run(argv) in this process for a tiny run; the process group it makes is undone."""
    import train

    def start(out, *extra):
        return train.start_run(["--model", tiny[2], "--train_data", toy_data[1], "--eval_data", toy_data[2],
                                 "--threads", "1", *(["--out_dir", str(out)] if out else []), *extra])
    yield start
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _files(folder):
    return {os.path.relpath(os.path.join(d, f), folder): hashlib.sha256(open(os.path.join(d, f), "rb").read()).digest()
            for d, _, fs in os.walk(folder) for f in fs}


def _failing_writes(monkeypatch, under, code):
    """Every write under `under` fails with errno `code` (a full or read-only disk; chmod does not
    stop root, and tests may run as root)."""
    import builtins
    real_open, real_makedirs = builtins.open, os.makedirs

    def fail(path):
        raise OSError(code, os.strerror(code), str(path))

    def opener(path, mode="r", *a, **k):
        if str(path).startswith(str(under)) and any(c in mode for c in "wax+"):
            fail(path)
        return real_open(path, mode, *a, **k)

    def makedirs(path, *a, **k):
        if str(path).startswith(str(under)) and not os.path.isdir(path):
            fail(path)
        return real_makedirs(path, *a, **k)
    monkeypatch.setattr(builtins, "open", opener)
    monkeypatch.setattr(os, "makedirs", makedirs)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("how", [["--resume"], ["--resume", "CK"], ["--resume", "RUN"], []])
def test_a_full_or_read_only_out_dir_stops_in_one_line_and_changes_nothing(
        code, how, saved_run, front_door, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    before = _files(run_dir)
    how = [{"CK": str(run_dir / "checkpoints" / "step_000001"), "RUN": str(run_dir)}.get(x, x) for x in how]
    _failing_writes(monkeypatch, run_dir, code)
    with pytest.raises(SystemExit) as e:
        front_door(None if len(how) == 2 else run_dir, *how)
    assert e.value.code == (f"train.py: cannot write in --out_dir {run_dir}: {os.strerror(code)} (errno {code}): "
                            f"{'free space there' if code == errno.ENOSPC else 'make it writable'}, or choose "
                            f"another --out_dir (nothing in it was changed)")
    assert _files(run_dir) == before


def test_a_new_run_in_a_read_only_place_stops_in_one_line(front_door, tmp_path, monkeypatch):
    _failing_writes(monkeypatch, tmp_path, errno.EROFS)
    with pytest.raises(SystemExit) as e:
        front_door(tmp_path / "new")
    assert e.value.code.startswith(f"train.py: cannot write in --out_dir {tmp_path / 'new'}: Read-only file system")
    assert not os.path.exists(tmp_path / "new")


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_an_out_dir_that_is_a_file_stops_in_one_line(resume, front_door, tmp_path):
    (tmp_path / "f").write_text("not a folder")
    with pytest.raises(SystemExit) as e:
        front_door(tmp_path / "f", *resume)
    assert e.value.code == f"train.py: --out_dir {tmp_path / 'f'} is a file, not a folder: choose another --out_dir, " \
                           f"or move the file away"
    assert (tmp_path / "f").read_text() == "not a folder"


@pytest.mark.parametrize("content,why", [('{"model": "toy", garbage', "not valid JSON"),
                                         ('["model", "toy"]', "not a JSON object (a list)"),
                                         ('\udcff', "not valid JSON")])
def test_resume_refuses_a_config_json_it_cannot_read_in_one_line(content, why, saved_run, front_door, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(saved_run, run_dir)
    (run_dir / "config.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    before = _files(run_dir)
    with pytest.raises(SystemExit) as e:
        front_door(run_dir, "--resume")
    assert e.value.code.startswith(f"train.py: --resume cannot check the run's settings: {run_dir}/config.json: {why}")
    assert e.value.code.endswith("restore the file, or rerun with --allow_config_change") and "\n" not in e.value.code
    assert _files(run_dir) == before


def test_resume_path_of_another_run_than_out_dir_is_refused(saved_run, front_door, tmp_path):
    with pytest.raises(SystemExit, match="belongs to the run in .* not to --out_dir"):
        front_door(tmp_path / "other", "--resume", saved_run)

# -----------------------------------------------------------------------------
# the torch-private names checkpoint.py relies on


def test_the_torch_private_names_checkpoint_py_relies_on_are_there():
    """Fails when torch renames or reshapes FileSystemReader._slice_file or _traverse.set_element:
    then checkpoint.py must be adapted (PRIVATE lists them)."""
    assert checkpoint.torch_api_problem() is None


def test_a_torch_without_those_names_is_named_not_every_checkpoint_called_unreadable(saved_run, tiny, monkeypatch):
    from torch.distributed.checkpoint import _traverse
    monkeypatch.delattr(_traverse, "set_element")
    model, opt = fresh(tiny)
    with pytest.raises(SystemExit) as e:
        checkpoint.load(saved_run, model, opt)
    assert "torch.distributed.checkpoint._traverse.set_element(root_dict, path, value)" in e.value.code
    assert f"the installed torch {torch.__version__} lacks it" in e.value.code and "unreadable" not in e.value.code
    assert f"pip install torch=={checkpoint.TORCH_TESTED}" in e.value.code
    with pytest.raises(RuntimeError, match="lacks it"):
        checkpoint.load_weights(os.path.join(saved_run, "checkpoints", "step_000002"), model)
