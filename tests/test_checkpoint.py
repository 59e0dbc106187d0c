"""checkpoint.py and train.py's resume: tampered or damaged checkpoints are refused and the
previous one is used; rotation never deletes the newest; a resumed run logs each step once;
a diverging run stops; fp32 master weights under bf16 compute."""
import dataclasses
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


def test_a_diverging_run_stops_with_an_error_and_exports_nothing(tiny, toy_data, tmp_path):
    out = str(tmp_path / "div")
    with pytest.raises(AssertionError, match="diverged"):
        run(train_args(tiny[2], toy_data[1], toy_data[2], out, steps=8,
                       extra=["--lr", "1e9", "--warmup_steps", "0", "--max_bad_steps", "2"]))
    assert not os.path.exists(os.path.join(out, "final"))


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


def test_a_shard_item_that_names_code_is_refused_even_with_a_matching_manifest(tmp_path):
    """DCP unpickles non-tensor items (optimiser hyper-parameters) from the shards; an attacker
    who rewrites a shard can rewrite the manifest too. The loader must unpickle them as data."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata
    marker = tmp_path / "pwned"
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    checkpoint.save(str(tmp_path), 1, model, opt, keep=2)
    path = tmp_path / "checkpoints" / "step_000001"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    buf = io.BytesIO()
    torch.save(Evil(), buf)
    md = pickle.load(open(path / ".metadata", "rb"))
    fqn = next(k for k, v in md.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata))
    idx = next(i for i in md.storage_data if i.fqn == fqn)
    shard = path / md.storage_data[idx].relative_path
    offset = shard.stat().st_size
    with open(shard, "ab") as f:
        f.write(buf.getvalue())
    md.storage_data[idx] = dataclasses.replace(md.storage_data[idx], offset=offset, length=len(buf.getvalue()))
    pickle.dump(md, open(path / ".metadata", "wb"))
    files = {n: hashlib.sha256((path / n).read_bytes()).hexdigest() for n in os.listdir(path) if n != "manifest.json"}
    (path / "manifest.json").write_text(json.dumps({"files": files}))
    assert checkpoint.verify(str(path)) is None                        # the tampering is self-consistent
    m2 = torch.nn.Linear(4, 4)
    with pytest.raises(SystemExit, match="refusing to load"):
        checkpoint.load(str(tmp_path), m2, torch.optim.AdamW(m2.parameters()))
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
