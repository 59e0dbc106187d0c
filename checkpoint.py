"""
checkpoint.py: save, verify, load and export, so a crash loses at most the steps since the last
save and a damaged or tampered checkpoint is refused, never loaded.

    save(out_dir, step, model, opt, keep, records, ptd_coef)
                                             DCP shards + per-rank RNG + a sha256 manifest, written
                                             into step_N.tmp, then renamed: a kill or a full disk
                                             leaves the last checkpoint intact; rotation never
                                             deletes the newest one the run's metrics vouch for
    load(out_dir, model, opt, path=None)     the newest checkpoint that verifies and reads whole
                                             (older ones are the fallback), or exactly `path`
                                             (--resume PATH); returns its step, or 0
    verify(path)                             None, or why the checkpoint cannot be trusted
    load_weights(path, model)                model weights only (eval.py --checkpoint)
    export_hf(model, processor, out)         save_pretrained of the fp32 master weights

Layout: <out_dir>/checkpoints/step_000020/{.metadata, __0_0.distcp, ..., extra_rank0.pt,
manifest.json} and a `latest` file naming the newest (for people; load() scans the folders).
Why a manifest: torch.distributed.checkpoint has no checksums, so a flipped bit in a shard
would load silently. Why check_metadata: DCP unpickles .metadata, and an unpickler that trusts
the file runs whatever code it names. The manifest is a checksum, not a signature: whoever can
rewrite a file can rewrite it too, so every pickle is also read as plain data only, and a
checkpoint is read whole before any of it is applied.
"""
import errno
import glob
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import statistics
import warnings

import torch
import torch.distributed as dist

from distributed import barrier, print0, rank
from loss import DIVERGENCES

STEP_DIR = re.compile(r"^step_(\d{6,})$")

# -----------------------------------------------------------------------------
# the torch-private names this file relies on; tests/test_checkpoint.py fails when torch moves them

TORCH_TESTED = "2.13.0"   # requirements.txt and .ci/run install it
PRIVATE = (("torch.distributed.checkpoint.filesystem", "FileSystemReader._slice_file",
            ("self", "file", "sinfo")),
           ("torch.distributed.checkpoint._traverse", "set_element",
            ("root_dict", "path", "value")))


def torch_api_problem():
    """None, or one line naming the private torch name (or its parameters) that the installed torch
    lacks. Without this check such a change makes every valid checkpoint read as 'unreadable'."""
    import importlib
    import inspect
    for module, name, params in PRIVATE:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part, None)
        have = tuple(inspect.signature(obj).parameters) if callable(obj) else None
        if have != params:
            got = "lacks it" if have is None else f"gives it the parameters ({', '.join(have)})"
            return (f"checkpoint.py reads checkpoints through torch's private "
                    f"{module}.{name}({', '.join(params)}), and the installed torch "
                    f"{torch.__version__} {got}; no checkpoint was judged. Install the torch this "
                    f"project is tested with (pip install torch=={TORCH_TESTED}) or adapt "
                    f"checkpoint.py")
    return None

# -----------------------------------------------------------------------------
# the pickled DCP metadata: an explicit allow-list of (module, name), nothing else

_ALLOWED = {
    ("torch.distributed.checkpoint.metadata", n) for n in (
        "Metadata", "MetadataIndex", "TensorStorageMetadata", "BytesStorageMetadata",
        "ChunkStorageMetadata", "TensorProperties", "StorageMeta", "_MEM_FORMAT_ENCODING")} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.distributed.checkpoint.planner", "WriteItemType"),
    ("torch.distributed.checkpoint.planner", "LoadItemType"),
    ("torch", "Size"), ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
}


class _StrictUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        plain = "." not in name       # a dotted name (protocol 4) reaches any attribute: never
        ok = plain and ((module, name) in _ALLOWED or (module == "torch" and isinstance(
            getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format))))
        if not ok:
            raise pickle.UnpicklingError(f"checkpoint metadata names {module}.{name}; "
                                         f"refusing to load")
        return super().find_class(module, name)


def check_metadata(path):
    """Unpickle <path>/.metadata with the allow-list; raise UnpicklingError naming the global."""
    with open(os.path.join(path, ".metadata"), "rb") as f:
        try:
            _StrictUnpickler(f).load()
        except Exception as e:     # any reason in one line: some of pickle's span two
            raise pickle.UnpicklingError(
                f"{path}/.metadata: {' '.join(str(e).split())[:200]}") from None

def _planner():
    """DCP's load planner, except that non-tensor items (optimiser hyper-parameters, ...) are
    unpickled with weights_only=True: the stock planner uses weights_only=False, so a shard
    could carry code even when .metadata is clean."""
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    class SafeLoadPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value):
            obj = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                from torch.distributed.checkpoint._traverse import set_element
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj
    return SafeLoadPlanner()


class Refused(Exception):
    """A checkpoint file that cannot be trusted or read; the message is one line that names the
    file and the reason."""


def _why(e):
    """One line for a failed read. torch's weights-only refusal is many lines and ends by advising
    weights_only=False, which is exactly what must not be done with a file from elsewhere."""
    text = str(e)
    if "Weights only load failed" in text:
        named = re.search(r"GLOBAL ([\w.]+)", text)
        if named:
            return f"not plain data: a pickle that names {named[1]} (code), so it was not unpickled"
        detail = re.search(r"^(Unsupported .*?)\s*$", text, re.M)
        return (f"not plain data: a pickle the weights-only reader refuses "
                f"({detail[1] if detail else 'unknown content'}), so it was not unpickled")
    first = " ".join(text.split())[:200]
    return f"unreadable ({type(e).__name__}{': ' + first if first else ''})"


def _read_shards(path, state):
    """dcp.load into `state` (collective), or Refused naming the shard whose item failed."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    class Reader(dcp.FileSystemReader):   # remembers the file being read, for the message
        reading = "the shards"

        def _slice_file(self, file, sinfo):
            self.reading = sinfo.relative_path
            return super()._slice_file(file, sinfo)
    reader = Reader(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        # a foreign pickle: refused below
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        try:
            dcp.load(state, storage_reader=reader, planner=_planner())
        except (Exception, CheckpointException) as e:      # DCP wraps each rank's error
            err = e
            if isinstance(e, CheckpointException):
                if rank() not in e.failures:
                    raise Refused("") from None          # the failing rank names its file
                err = e.failures[rank()][0]
            raise Refused(f"{reader.reading}: {_why(err)}") from None


def _read_extra(path, r=None):
    """Rank r's (default: this rank's) extra_rank<r>.pt, step and RNG state, as plain data, or
    Refused."""
    name = f"extra_rank{rank() if r is None else r}.pt"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            extra = torch.load(os.path.join(path, name), weights_only=True)
    except Exception as e:
        raise Refused(f"{name}: {_why(e)}") from None
    if not (isinstance(extra, dict) and isinstance(extra.get("step"), int)
            and isinstance(extra.get("rng"), torch.Tensor) and extra["rng"].dtype == torch.uint8):
        raise Refused(f"{name}: not a step and an RNG state")
    return extra

# -----------------------------------------------------------------------------
# the manifest


def sha256(path):
    """Hex sha256 of a file, read in 4 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _gather(obj):
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _write_manifest(tmp):
    """Every rank hashes the files it wrote (in parallel); rank 0 adds .metadata and writes."""
    r = rank()
    mine = {os.path.basename(p): sha256(p)
            for p in glob.glob(os.path.join(tmp, f"__{r}_*.distcp"))
            + [os.path.join(tmp, f"extra_rank{r}.pt")]}
    files = {}
    for part in _gather(mine):
        files.update(part)
    if r == 0:
        files[".metadata"] = sha256(os.path.join(tmp, ".metadata"))
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump({"files": files}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())


def verify(path, share=None):
    """None if the checkpoint at path is complete, untampered and matches its manifest, else the
    reason. share=(rank, world) hashes only every world-th file (each rank checks its share)."""
    if not os.path.isdir(path):
        return "not a directory"
    try:
        with open(os.path.join(path, "manifest.json")) as f:
            files = json.load(f)["files"]
        assert isinstance(files, dict) and ".metadata" in files
    except Exception:
        return "manifest.json missing or unreadable"
    names = sorted(files)
    if share is not None:
        names = names[share[0]::share[1]]
    for name in names:
        p = os.path.join(path, name)
        if os.path.basename(name) != name or not os.path.isfile(p):
            return f"{name}: missing"
        if sha256(p) != files[name]:
            return f"{name}: sha256 differs from manifest.json (corrupt or modified)"
    try:
        check_metadata(path)
    except Exception as e:
        return f"{e}"
    return None

# -----------------------------------------------------------------------------
# save and load


def checkpoints(out_dir):
    """Finished checkpoint folders, newest first."""
    ck = os.path.join(out_dir, "checkpoints")
    found = [d for d in (os.listdir(ck) if os.path.isdir(ck) else []) if STEP_DIR.match(d)]
    return [os.path.join(ck, d)
            for d in sorted(found, key=lambda d: int(STEP_DIR.match(d)[1]), reverse=True)]


def save(out_dir, step, model, opt, keep, records=None, ptd_coef=0.0):
    """Model + optimiser (DCP, sharded, fp32 master), each rank's RNG, manifest; atomic. A write
    that fails (a full disk, a folder turned read-only) removes the partial step_N.tmp and stops
    in one line; the checkpoints already saved are left as they were. records, ptd_coef: the run's
    metrics, for rotation (rotate)."""
    from torch.distributed.checkpoint.api import CheckpointException
    ck = os.path.join(out_dir, "checkpoints")
    final, tmp = os.path.join(ck, f"step_{step:06d}"), os.path.join(ck, f"step_{step:06d}.tmp")
    try:
        _write(tmp, step, model, opt)
    except (Exception, CheckpointException) as e:      # DCP's wrapper is a BaseException
        cause = _cause(e)
        if not isinstance(cause, OSError):
            raise
        if rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        kept = checkpoints(out_dir)
        raise SystemExit(f"checkpoint: cannot save step {step} in {ck}: {os_error(cause)}. The "
                         f"partial {os.path.basename(tmp)} was removed and "
                         f"{kept[0] + ' is intact' if kept else 'no earlier checkpoint exists'}: "
                         f"{fix_for(cause)}, then rerun with --resume") from None
    if rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        try:
            with open(os.path.join(ck, "latest.tmp"), "w") as f:
                f.write(os.path.basename(final))
            os.replace(os.path.join(ck, "latest.tmp"), os.path.join(ck, "latest"))
        except OSError as e:      # `latest` is for people; load() scans the folders
            _remove(os.path.join(ck, "latest.tmp"))
            print0(f"checkpoint: {final} is saved, but its `latest` pointer could not be written: "
                   f"{os_error(e)}")
        rotate(out_dir, keep, records, ptd_coef)
    barrier()


def _write(tmp, step, model, opt):
    """The checkpoint's files into tmp (collective: DCP, the manifest)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    if rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
    barrier()
    msd, osd = get_state_dict(model, opt)
    with warnings.catch_warnings():  # one process without a process group is a supported case
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=tmp)
    torch.save({"step": step, "rng": torch.get_rng_state()},
               os.path.join(tmp, f"extra_rank{rank()}.pt"))
    barrier()
    _write_manifest(tmp)


def _cause(e):
    """The error under DCP's CheckpointException (which wraps each rank's): this rank's, else the
    first."""
    from torch.distributed.checkpoint.api import CheckpointException
    if isinstance(e, CheckpointException) and e.failures:
        return (e.failures.get(rank()) or next(iter(e.failures.values())))[0]
    return e


def os_error(e):
    """'No space left on device (errno 28)' from an OSError, for one-line messages."""
    return (f"{e.strerror or type(e).__name__} (errno {e.errno})" if e.errno
            else (str(e) or type(e).__name__))


def fix_for(e):
    """What to do about an OSError met while writing a run's files."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free space there, or choose another --out_dir"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "make it writable, or choose another --out_dir"
    return "choose another --out_dir"


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def known_good(paths, records, ptd_coef):
    """The checkpoints among paths that the run's metrics vouch for: step_N holds the weights step
    N+1 starts from, so it is known good once step N+1 ran and the run had not yet left its usual
    range (left_usual_range: the rule the divergence stop uses)."""
    k, _ = left_usual_range(records, ptd_coef)
    ran = max((r["step"] for r in records if "grad_norm" in r), default=0)
    last_in_range = ran if k is None else k - 1
    return [p for p in paths if step_of(p) + 1 <= last_in_range]


def rotate(out_dir, keep, records=None, ptd_coef=0.0):
    """Delete all but the `keep` newest checkpoints (the newest is never deleted), except the newest
    one known good (known_good: from records, the run's metrics), kept until a newer one is known
    good: so whatever --keep is, the newest checkpoint from before a divergence survives (at most
    one more folder than --keep). Without records (no run history), by count alone."""
    found = checkpoints(out_dir)
    spare = set(found[:max(1, keep)])
    if records is not None:
        spare.update(known_good(found, records, ptd_coef)[:1])
    for old in found:
        if old not in spare:
            shutil.rmtree(old, ignore_errors=True)


def _agree(reason):
    """A checkpoint is usable only if every rank's share verified and read: None then, else the
    reason of the first rank that has one (every rank returns the same)."""
    failed = [why for why in _gather(reason) if why is not None]
    return None if not failed else next((why for why in failed if why), "failed on another rank")


def _read_whole(path, model, opt):
    """Every file of the checkpoint this rank needs, read into new tensors that the model and the
    optimiser do not hold (collective: DCP). Returns (state, extra) or raises Refused. Nothing is
    applied here, so a file that fails half-way leaves the model as it was. The price is one more
    copy of this rank's model and optimiser state for the time of the load."""
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.utils._pytree import tree_map_only
    msd, osd = get_state_dict(model, opt)
    state = tree_map_only(torch.Tensor, torch.empty_like, {"model": msd, "optim": osd})
    err = None
    try:
        extra = _read_extra(path)        # before the collective, so that every rank joins it
    except Refused as e:
        err = e
    _read_shards(path, state)
    if err is not None:
        raise err
    return state, extra


def load(out_dir, model, opt, path=None):
    """Restore model, optimiser and RNG from the newest checkpoint that verifies and reads whole;
    returns its step. A damaged or tampered newer checkpoint is skipped with a one-line reason,
    before anything of it is applied. 0 if there is none. path (--resume PATH): exactly that
    checkpoint, verified and read whole the same way, and refused in one line if it fails (no
    fallback: it was chosen); the run's checkpoints newer than it are then set aside (renamed
    superseded_step_N), so that neither rotation nor a later plain --resume prefers them to the
    new saves, and nothing is destroyed."""
    from torch.distributed.checkpoint.state_dict import set_state_dict
    problem = torch_api_problem()
    if problem:
        raise SystemExit(f"checkpoint: {problem}")
    world = dist.get_world_size() if dist.is_initialized() else 1
    found, skipped = [path] if path else checkpoints(out_dir), []
    for p in found:
        reason = verify(p, share=(rank(), world))
        if reason is None and not os.path.isfile(os.path.join(p, f"extra_rank{rank()}.pt")):
            reason = f"extra_rank{rank()}.pt: missing (saved with fewer ranks?)"
        reason = _agree(reason)
        if reason is None:               # every rank verified its share: read every file
            try:
                state, extra = _read_whole(p, model, opt)
            except Refused as e:
                reason = str(e)
            reason = _agree(reason)
        if reason is not None and path:
            raise SystemExit(f"checkpoint: --resume {path}: refused, nothing loaded: {reason}; "
                             f"choose another checkpoint (plain --resume takes the newest that "
                             f"verifies)")
        if reason is not None:
            print0(f"checkpoint {p} skipped: {reason}")
            skipped.append(p)
            continue
        step = step_of(p)
        _set_aside(skipped if not path else [q for q in checkpoints(out_dir) if step_of(q) > step],
                   "damaged_" if not path else "superseded_")
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        torch.set_rng_state(extra["rng"])
        print0(f"resumed from {p} at step {extra['step']}")
        return int(extra["step"])
    if found:
        raise SystemExit(f"checkpoint: none of the {len(found)} checkpoints in "
                         f"{os.path.dirname(found[0])} verifies and reads whole (reasons above); "
                         f"refusing to start over on top of them")
    return 0


def step_of(path):
    """N of a .../step_N checkpoint folder."""
    return int(STEP_DIR.match(os.path.basename(path))[1])


def _set_aside(paths, prefix):
    """Rename checkpoints (damaged ones skipped by a resume, or those newer than the one --resume
    PATH chose) so that rotation by step number can never delete the new saves in their favour,
    and nothing is destroyed."""
    barrier()
    if rank() == 0:
        for p in paths:
            new, n = os.path.join(os.path.dirname(p), prefix + os.path.basename(p)), 1
            while os.path.exists(new):      # set aside before, by an earlier resume
                new, n = (os.path.join(os.path.dirname(p), f"{prefix}{os.path.basename(p)}.{n}"),
                          n + 1)
            os.replace(p, new)
            if prefix == "superseded_":   # a damaged one's skip line has said it already
                print0(f"checkpoint: {p} set aside as {os.path.basename(new)}")
    barrier()


# -----------------------------------------------------------------------------
# the run's usual range: the checkpoints its metrics vouch for (rotation, the divergence stop)

# a gradient norm over this many times the median of the run's earlier steps' is out of range
USUAL_RANGE = 10
RANGE_RULE = (f"a finite loss and gradient norm, the norm at most {USUAL_RANGE}x the median of the "
              f"run's earlier steps' and not 0 while the step had something to learn")


def left_usual_range(records, ptd_coef):
    """(step, why) for the first training step whose numbers left the run's usual range
    (RANGE_RULE), else (None, ""). records: metrics.jsonl's, any order. The scale comes from the
    run's own history; only the rise is relative: a small norm is usual in RL (a step of all-pass
    or all-fail groups), but an exact 0 with distilled rows, mixed groups or a KL means the
    policy's softmax is saturated (what a huge step does to the weights: the loss and the norm
    stay finite)."""
    seen = []
    for r in sorted((r for r in records if "grad_norm" in r), key=lambda r: r["step"]):
        gn = float(r["grad_norm"])
        # "div"; a run logged before that key has it under the divergence's own name
        div = r.get("div", max((r.get(k, 0.0) for k in DIVERGENCES), default=0.0))
        learns = (ptd_coef > 0 and r.get("distilled_frac", 0) > 0 and div > 0) \
            or r.get("mixed_group_frac", 0) > 0 or r.get("kl", 0) > 0
        scale = statistics.median([g for g in seen if g > 0] or [math.inf])
        if r.get("skipped") or not math.isfinite(gn):
            return r["step"], f"step {r['step']} had a non-finite loss or gradient norm"
        if gn > USUAL_RANGE * scale:
            return r["step"], (f"step {r['step']}'s gradient norm {gn:.3g} was over "
                               f"{USUAL_RANGE}x the median {scale:.3g}")
        if gn == 0 and learns:
            return r["step"], (f"step {r['step']}'s gradient norm was 0 though it had something "
                               f"to learn")
        seen.append(gn)
    return None, ""

# -----------------------------------------------------------------------------
# the run folder: --resume PATH, a new run in an old folder


def resume_target(path):
    """--resume PATH -> (run folder, checkpoint folder or None), or ValueError in one line. PATH is
    a checkpoint folder (<run>/checkpoints/step_N: exactly that one) or a run folder (its newest
    checkpoint that verifies, as plain --resume)."""
    p = os.path.normpath(os.path.abspath(path))
    if not os.path.exists(p):
        raise ValueError(f"--resume {path}: no such file or directory")
    if not os.path.isdir(p):
        raise ValueError(f"--resume {path}: not a folder; give a run folder or one of its "
                         f"checkpoints/step_N folders")
    if (STEP_DIR.match(os.path.basename(p))
            and os.path.basename(os.path.dirname(p)) == "checkpoints"):
        return os.path.dirname(os.path.dirname(p)), p
    if (os.path.isfile(os.path.join(p, "config.json"))
            or os.path.isdir(os.path.join(p, "checkpoints"))):
        return p, None
    raise ValueError(f"--resume {path}: neither a run folder (with config.json or checkpoints/) "
                     f"nor a checkpoint folder (<run>/checkpoints/step_N; rename a set-aside one "
                     f"back to step_N to use it)")


def clear(out_dir):
    """A new run (no --resume) in an old run directory: its checkpoints go, so that a later
    --resume can never pick up the earlier run's weights. Returns how many were removed."""
    ck = os.path.join(out_dir, "checkpoints")
    n = len(checkpoints(out_dir))
    if rank() == 0 and os.path.isdir(ck):
        shutil.rmtree(ck)
    barrier()
    return n


def load_weights(path, model):
    """Model weights only, from a verified checkpoint folder (eval.py --checkpoint)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    problem = torch_api_problem()
    if problem:
        raise RuntimeError(problem)
    reason = verify(path)
    if reason is not None:
        raise RuntimeError(f"{path}: refusing to load: {reason}")
    # the optimiser's plain items and the RNG files are not needed here, but they are read too
    # (as data): a checkpoint with a tampered file is refused whole
    meta = dcp.FileSystemReader(path).read_metadata()  # .metadata passed the allow-list in verify()
    # nothing applied early
    sd = {"model": {k: torch.empty_like(v) for k, v in get_model_state_dict(model).items()},
          **{k: None for k, v in meta.state_dict_metadata.items()
             if isinstance(v, BytesStorageMetadata)}}
    try:
        for name in os.listdir(path):
            if re.fullmatch(r"extra_rank\d+\.pt", name):
                _read_extra(path, int(name[10:-3]))
        _read_shards(path, sd)
    except Refused as e:
        raise RuntimeError(f"{path}: refusing to load: {e}") from None
    set_model_state_dict(model, sd["model"])


def export_hf(model, processor, out):
    """Full weights gathered to rank 0 and written with save_pretrained (safetensors + processor),
    in the dtype of the master parameters (fp32: training keeps an fp32 master copy). Written into
    out.tmp, then renamed: a failed write (a full disk) leaves no half export, and stops in one
    line."""
    import rollout
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    sd = get_model_state_dict(model,
                              options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    err, tmp = None, out.rstrip(os.sep) + ".tmp"
    if rank() == 0:
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp, state_dict=sd)
            rollout.save_processor(processor, tmp)
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            err = (f"checkpoint: cannot export the final model to {out}: {os_error(e)}; the "
                   f"partial export was removed: {fix_for(e)}, then rerun with --resume (it "
                   f"exports the last checkpoint)")
    err = _agree(err)          # every rank stops, not only the one that wrote
    if err:
        raise SystemExit(err)
