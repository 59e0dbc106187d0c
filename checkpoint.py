"""
checkpoint.py: save, verify, load and export, so a crash loses at most the steps since the last
save and a damaged or tampered checkpoint is refused, never loaded.

    save(out_dir, step, model, opt, keep)    DCP shards + per-rank RNG + a sha256 manifest, written
                                             into step_N.tmp, then renamed: a kill leaves the last
                                             checkpoint intact
    load(out_dir, model, opt)                the newest checkpoint that verifies and reads whole
                                             (older ones are the fallback); returns its step, or 0
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

STEP_DIR = re.compile(r"^step_(\d{6,})$")

# -----------------------------------------------------------------------------
# the pickled DCP metadata: an explicit allow-list of (module, name), nothing else

_ALLOWED = {
    ("torch.distributed.checkpoint.metadata", n) for n in (
        "Metadata", "MetadataIndex", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
        "TensorProperties", "StorageMeta", "_MEM_FORMAT_ENCODING")} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.distributed.checkpoint.planner", "WriteItemType"),
    ("torch.distributed.checkpoint.planner", "LoadItemType"),
    ("torch", "Size"), ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
}


class _StrictUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        plain = "." not in name       # a dotted name (protocol 4) reaches any attribute: never
        ok = plain and ((module, name) in _ALLOWED or (module == "torch" and isinstance(
            getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format))))
        if not ok:
            raise pickle.UnpicklingError(f"checkpoint metadata names {module}.{name}; refusing to load")
        return super().find_class(module, name)


def check_metadata(path):
    """Unpickle <path>/.metadata with the allow-list; raise UnpicklingError naming the global."""
    with open(os.path.join(path, ".metadata"), "rb") as f:
        try:
            _StrictUnpickler(f).load()
        except Exception as e:     # any reason in one line: some of pickle's span two
            raise pickle.UnpicklingError(f"{path}/.metadata: {' '.join(str(e).split())[:200]}") from None

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
        warnings.filterwarnings("ignore", message="Detected pickle protocol")   # a foreign pickle: refused below
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
    """Rank r's (default: this rank's) extra_rank<r>.pt, step and RNG state, as plain data, or Refused."""
    name = f"extra_rank{rank() if r is None else r}.pt"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            extra = torch.load(os.path.join(path, name), weights_only=True)
    except Exception as e:
        raise Refused(f"{name}: {_why(e)}") from None
    if not (isinstance(extra, dict) and isinstance(extra.get("step"), int) and isinstance(extra.get("rng"), torch.Tensor)
            and extra["rng"].dtype == torch.uint8):
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
            for p in glob.glob(os.path.join(tmp, f"__{r}_*.distcp")) + [os.path.join(tmp, f"extra_rank{r}.pt")]}
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
    return [os.path.join(ck, d) for d in sorted(found, key=lambda d: int(STEP_DIR.match(d)[1]), reverse=True)]


def save(out_dir, step, model, opt, keep):
    """Model + optimiser (DCP, sharded, fp32 master), each rank's RNG, manifest; atomic."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    ck = os.path.join(out_dir, "checkpoints")
    final, tmp = os.path.join(ck, f"step_{step:06d}"), os.path.join(ck, f"step_{step:06d}.tmp")
    if rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
    barrier()
    msd, osd = get_state_dict(model, opt)
    with warnings.catch_warnings():  # one process without a process group is a supported case
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=tmp)
    torch.save({"step": step, "rng": torch.get_rng_state()}, os.path.join(tmp, f"extra_rank{rank()}.pt"))
    barrier()
    _write_manifest(tmp)
    if rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        with open(os.path.join(ck, "latest.tmp"), "w") as f:
            f.write(os.path.basename(final))
        os.replace(os.path.join(ck, "latest.tmp"), os.path.join(ck, "latest"))
        older = [p for p in checkpoints(out_dir) if p != final]
        for old in ([final] + older)[max(1, keep):]:          # the one just written is never deleted
            shutil.rmtree(old, ignore_errors=True)
    barrier()


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


def load(out_dir, model, opt):
    """Restore model, optimiser and RNG from the newest checkpoint that verifies and reads whole;
    returns its step. A damaged or tampered newer checkpoint is skipped with a one-line reason,
    before anything of it is applied. 0 if there is none."""
    from torch.distributed.checkpoint.state_dict import set_state_dict
    world = dist.get_world_size() if dist.is_initialized() else 1
    found, skipped = checkpoints(out_dir), []
    for path in found:
        reason = verify(path, share=(rank(), world))
        if reason is None and not os.path.isfile(os.path.join(path, f"extra_rank{rank()}.pt")):
            reason = f"extra_rank{rank()}.pt: missing (saved with fewer ranks?)"
        reason = _agree(reason)
        if reason is None:               # every rank verified its share: read every file
            try:
                state, extra = _read_whole(path, model, opt)
            except Refused as e:
                reason = str(e)
            reason = _agree(reason)
        if reason is not None:
            print0(f"checkpoint {path} skipped: {reason}")
            skipped.append(path)
            continue
        _set_aside(skipped)
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        torch.set_rng_state(extra["rng"])
        print0(f"resumed from {path} at step {extra['step']}")
        return int(extra["step"])
    if found:
        raise SystemExit(f"checkpoint: none of the {len(found)} checkpoints in {os.path.dirname(found[0])} "
                         f"verifies and reads whole (reasons above); refusing to start over on top of them")
    return 0


def _set_aside(paths):
    """Rename skipped (damaged) checkpoints newer than the one resumed, so rotation by step
    number can never delete the new saves in their favour, and nothing is destroyed."""
    barrier()
    if rank() == 0:
        for p in paths:
            os.replace(p, os.path.join(os.path.dirname(p), "damaged_" + os.path.basename(p)))
    barrier()


# -----------------------------------------------------------------------------
# after a divergence stop: which checkpoint to trust

USUAL_RANGE = 10   # a gradient norm over this many times the median of the run's earlier steps' is out of range
RANGE_RULE = (f"a finite loss and gradient norm, the norm at most {USUAL_RANGE}x the median of the run's earlier "
              f"steps' and not 0 while the step had something to learn")


def left_usual_range(records, ptd_coef):
    """(step, why) for the first training step whose numbers left the run's usual range (RANGE_RULE),
    else (None, ""). records: metrics.jsonl's, any order. The scale comes from the run's own history;
    only the rise is relative: a small norm is usual in RL (a step of all-pass or all-fail groups),
    but an exact 0 with distilled rows, mixed groups or a KL means the policy's softmax is saturated
    (what a huge step does to the weights: the loss and the norm stay finite)."""
    seen = []
    for r in sorted((r for r in records if "grad_norm" in r), key=lambda r: r["step"]):
        gn = float(r["grad_norm"])
        div = max((r.get(k, 0.0) for k in ("jsd", "fkl", "rkl")), default=0.0)
        learns = (ptd_coef > 0 and r.get("distilled_frac", 0) > 0 and div > 0) or r.get("mixed_group_frac", 0) > 0 \
            or r.get("kl", 0) > 0
        scale = statistics.median([g for g in seen if g > 0] or [math.inf])
        if r.get("skipped") or not math.isfinite(gn):
            return r["step"], f"step {r['step']} had a non-finite loss or gradient norm"
        if gn > USUAL_RANGE * scale:
            return r["step"], f"step {r['step']}'s gradient norm {gn:.3g} was over {USUAL_RANGE}x the median {scale:.3g}"
        if gn == 0 and learns:
            return r["step"], f"step {r['step']}'s gradient norm was 0 though it had something to learn"
        seen.append(gn)
    return None, ""


def before_divergence(out_dir, records, ptd_coef):
    """One line for the divergence stop: the newest kept checkpoint from before the run's numbers
    left their usual range (step_N holds the weights step N+1 starts from, so it is vouched for
    only when step N+1 was still in range), or why there is none."""
    k, why = left_usual_range(records, ptd_coef)
    kept = [(int(STEP_DIR.match(os.path.basename(p))[1]), p) for p in checkpoints(out_dir)]
    rule = f"the usual range, from this run's own metrics: {RANGE_RULE}"
    if k is None:
        return (f"No step left the usual range ({rule}), so the checkpoints were checked for finite numbers "
                f"only: treat them as suspect and start over with a lower --lr.")
    good = [(n, p) for n, p in kept if n + 1 < k]
    suspect = ", ".join(os.path.basename(p) for n, p in kept if n + 1 >= k)
    if not good:
        return (f"The run left its usual range first at step {k} ({why}; {rule}), and no kept checkpoint is from "
                f"before it{f' ({suspect} holds weights that step or a later one trained on)' if suspect else ''}: "
                f"start over with a lower --lr.")
    n, p = good[0]
    move = f"move {suspect} out of {os.path.dirname(p)}, then " if suspect else ""
    return (f"The run left its usual range first at step {k} ({why}; {rule}). The newest checkpoint from before "
            f"that is {p} (step {n + 1} trained on its weights within range); to continue from it, {move}"
            f"rerun with --resume and a lower --lr.")


def config_changes(out_dir, config, keys):
    """The keys whose value in config differs from the run's saved config.json, as one string
    ("group_size 8 -> 4, seed 0 -> 1"); "" when none differ or nothing was saved."""
    path = os.path.join(out_dir, "config.json")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        saved = json.load(f)
    changed = [k for k in keys if k in saved and saved[k] != config.get(k)]
    return ", ".join(f"{k} {saved[k]!r} -> {config.get(k)!r}" for k in changed)


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
    reason = verify(path)
    if reason is not None:
        raise RuntimeError(f"{path}: refusing to load: {reason}")
    # the optimiser's plain items and the RNG files are not needed here, but they are read too
    # (as data): a checkpoint with a tampered file is refused whole
    meta = dcp.FileSystemReader(path).read_metadata()     # .metadata passed the allow-list in verify()
    sd = {"model": {k: torch.empty_like(v) for k, v in get_model_state_dict(model).items()},   # nothing applied early
          **{k: None for k, v in meta.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata)}}
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
    in the dtype of the master parameters (fp32: training keeps an fp32 master copy)."""
    import rollout
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank() == 0:
        model.save_pretrained(out, state_dict=sd)
        rollout.save_processor(processor, out)
    barrier()
