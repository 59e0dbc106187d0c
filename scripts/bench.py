"""
scripts/bench.py: measured costs, printed as tables with ratios against a baseline in the same run.

    python scripts/bench.py loss          # Top-K JSD (chunked, K=100) vs full-vocabulary JSD,
                                          # V=151,936, 2k and 8k response tokens (add 16384 on a GPU)
    python scripts/bench.py loss --tokens 2048 8192 16384 --device cuda --dtype bfloat16
    python scripts/bench.py step          # PTD-PO step vs GRPO-with-KL step on the same batch,
                                          # time split by phase, tokens/s (the demo model)
    python scripts/bench.py rollout       # sampling per decode step at V = 151,936: ours vs HF
                                          # greedy (the floor) vs a per-row sort for top-p
    python scripts/bench.py head          # vocabulary-sized matmuls per scoring pass, counted

Each loss measurement runs in a fresh subprocess. Peak memory on CPU is the rise of the
process's peak resident set (ru_maxrss) over its level just before the first call, with the
inputs already allocated; on CUDA it is torch.cuda.max_memory_allocated over the same
window. A run that exceeds --mem_limit_gb is reported as such, not retried.
Timings are wall-clock seconds of one forward+backward after one warm-up (CPU: no warm-up
for the full-vocabulary path at 8k tokens and up, it would double a minutes-long run).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import loss  # noqa: E402

# -----------------------------------------------------------------------------
# the distillation term, two ways


def ours(hidden, weight, targets, tutor_logp, support, support_mask, chunk):
    """Top-K JSD: chunked student log-probs on the support, JSD with a tail bucket."""
    out = loss.head_logprobs(hidden, weight, targets, support=support, chunk_size=chunk, entropy=False)
    return loss.topk_jsd(out["support_logp"], tutor_logp, support_mask).mean()


def full(hidden, weight, tutor_full_logp):
    """Plain JSD on the full vocabulary: (N, V) logits, log-softmax, mixture, two KLs."""
    logp = torch.log_softmax((hidden @ weight.t()).float(), dim=-1)
    m = torch.logaddexp(logp, tutor_full_logp) - torch.log(torch.tensor(2.0))
    kl_p = (logp.exp() * (logp - m)).sum(-1)
    kl_q = (tutor_full_logp.exp() * (tutor_full_logp - m)).sum(-1)
    return (0.5 * kl_p + 0.5 * kl_q).mean()


def rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def measure_one(a):
    """One (path, tokens) measurement in this process; prints a JSON line."""
    torch.manual_seed(0)
    dev, dtype = torch.device(a.device), getattr(torch, a.dtype)
    N, V, D, K = a.n, a.vocab, a.hidden, a.topk
    hidden = (torch.randn(N, D, device=dev) / D ** 0.5).to(dtype).requires_grad_()
    weight = torch.randn(V, D, device=dev).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (N,), device=dev)
    if a.path == "ours":
        # what the tutor pass leaves behind: (N, 2K) support ids, mask and tutor log-probs
        support = torch.randint(0, V, (N, 2 * K), device=dev)
        support_mask = torch.rand(N, 2 * K, device=dev) < 0.8
        tutor_logp = torch.log_softmax(torch.randn(N, 2 * K, device=dev), -1) - 1.0
        fn = lambda: ours(hidden, weight, targets, tutor_logp, support, support_mask, a.chunk)
    else:
        tutor_full = torch.log_softmax(torch.randn(N, V, device=dev), -1)
        fn = lambda: full(hidden, weight, tutor_full)
    # peak: from just before the first call (ru_maxrss is a high-water mark, so the window
    # must include it); time: the second call when there is a warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_gb()
    if a.device == "cuda" or a.path == "ours" or N < 8192:
        fn().backward()
        hidden.grad = weight.grad = None
    t0 = time.perf_counter()
    fn().backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 30
    else:
        peak = rss_gb() - base
    print(json.dumps({"path": a.path, "tokens": N, "seconds": time.perf_counter() - t0, "peak_gb": peak}))


def bench_loss(a):
    rows = []
    for n in a.tokens:
        res = {}
        for path in ("ours", "full"):
            cmd = [sys.executable, __file__, "_one", "--path", path, "--n", str(n), "--vocab", str(a.vocab),
                   "--hidden", str(a.hidden), "--topk", str(a.topk), "--chunk", str(a.chunk),
                   "--device", a.device, "--dtype", a.dtype, "--mem_limit_gb", str(a.mem_limit_gb)]
            p = subprocess.run(cmd, capture_output=True, text=True)
            lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
            res[path] = json.loads(lines[-1]) if p.returncode == 0 and lines else None
            if res[path] is None:
                print(f"  {path} at {n} tokens did not finish (limit {a.mem_limit_gb} GB): "
                      f"{(p.stderr.strip().splitlines() or ['?'])[-1][:120]}", flush=True)
        rows.append((n, res))
        print_loss_row(n, res)
        done = [(m, r["full"]) for m, r in rows if r.get("full")]
        if res.get("full") is None and res.get("ours") and done:
            m, f = done[-1]   # the full path's memory grows linearly in tokens: extrapolate, marked as such
            est = f["peak_gb"] * n / m
            print(f"  full at {n} tokens, extrapolated linearly from {m}: ~{est:.1f} GB "
                  f"(~{est / max(res['ours']['peak_gb'], 1e-3):.0f}x ours; not measured)", flush=True)
    return rows


def print_loss_row(n, res):
    o, f = res.get("ours"), res.get("full")
    fmt = lambda r, k: f"{r[k]:8.2f}" if r else "     n/a"
    ratio_m = f"{f['peak_gb'] / max(o['peak_gb'], 1e-3):7.1f}x" if o and f else "    n/a"
    ratio_t = f"{f['seconds'] / o['seconds']:6.2f}x" if o and f else "   n/a"
    if not hasattr(print_loss_row, "header"):
        print(f"{'tokens':>7s} | {'ours GB':>8s} {'full GB':>8s} {'mem full/ours':>13s} | "
              f"{'ours s':>8s} {'full s':>8s} {'speed ours/full':>15s}")
        print_loss_row.header = True
    print(f"{n:7d} | {fmt(o, 'peak_gb')} {fmt(f, 'peak_gb')} {ratio_m:>13s} | "
          f"{fmt(o, 'seconds')} {fmt(f, 'seconds')} {ratio_t:>15s}", flush=True)

# -----------------------------------------------------------------------------
# a PTD-PO step against a GRPO step on the same batch


def bench_step(a):
    import config
    import train
    args = config.get_args(["--prompts_per_step", str(a.prompts), "--minibatch_prompts", str(a.prompts),
                           "--no_export", "--threads", str(a.threads)])
    train.resolve_paths(args)
    import data
    import rollout
    examples = data.load_jsonl(args.train_data, report=lambda s: None)
    res = {}
    for algo in ("grpo", "ptdpo"):
        args.algo = algo
        times = []
        for rep in range(a.repeats):
            policy, processor = rollout.load_model(args.model, "float32", "cpu")
            ref, _ = rollout.load_model(args.model, "float32", "cpu")
            ref.requires_grad_(False)
            opt = torch.optim.AdamW(policy.parameters(), lr=args.lr)
            m = train.train_step(a.step, policy, ref, processor, opt, examples, args, 0, 1)
            times.append(m)
        avg = {k: sum(t[k] for t in times) / len(times) for k in ("t_rollout", "t_old", "t_ref_tutor",
                                                                  "t_update", "tok_per_s", "distilled_frac")}
        avg["total"] = avg["t_rollout"] + avg["t_old"] + avg["t_ref_tutor"] + avg["t_update"]
        res[algo] = avg
    g, p = res["grpo"], res["ptdpo"]
    print(f"one step: {a.prompts} prompts x {args.group_size} rollouts, demo model, CPU, {a.threads} thread(s), "
          f"mean of {a.repeats}")
    print(f"{'':8s} {'rollout':>8s} {'old':>8s} {'ref/tutor':>9s} {'update':>8s} {'total':>8s} {'tok/s':>7s} "
          f"{'distilled':>9s}")
    for name, r in res.items():
        print(f"{name:8s} {r['t_rollout']:8.2f} {r['t_old']:8.2f} {r['t_ref_tutor']:9.2f} {r['t_update']:8.2f} "
              f"{r['total']:8.2f} {r['tok_per_s']:7.0f} {r['distilled_frac']:9.2f}")
    print(f"PTD-PO / GRPO step time: {p['total'] / g['total']:.2f}x  "
          f"(scoring passes only: {(p['t_old'] + p['t_ref_tutor']) / (g['t_old'] + g['t_ref_tutor']):.2f}x)")
    return res


# -----------------------------------------------------------------------------
# sampling at the real vocabulary


class SortSampler:
    """The textbook nucleus sampler, for comparison: a full sort of every row for top-p and one
    torch.Generator per row per step (what sampler.RowSampler replaces)."""

    def __init__(self, keys, top_p, width):
        self.keys, self.top_p, self.width = keys, top_p, width

    def __call__(self, input_ids, scores):
        logits = scores.float()
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        p = sorted_logits.softmax(-1)
        drop = p.cumsum(-1) - p > self.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        noise = torch.empty_like(logits)
        for r, key in enumerate(self.keys):
            g = torch.Generator().manual_seed(key * 1_000_003 + input_ids.shape[1] - self.width)
            noise[r].exponential_(generator=g)
        choice = (logits - noise.log()).argmax(-1)
        return torch.full_like(scores, float("-inf")).scatter_(-1, choice.unsqueeze(-1), 0.0)


def bench_rollout(a):
    """Per decode step, the same model and batch: greedy generate() (choosing a token costs
    nothing: the floor), rollout.sample (exact T / top-p, per-row streams), and SortSampler."""
    import tempfile
    from transformers import LogitsProcessorList
    import data
    import rollout
    import sampler
    from demo import tiny_model, toy
    torch.set_num_threads(a.threads)
    model_dir, train_path, _ = toy.ensure()
    wide = tiny_model.widen(model_dir, tempfile.mkdtemp())
    model, processor = rollout.load_model(wide, "float32", "cpu")
    exs = data.load_jsonl(train_path, report=lambda *x: None)[:a.rows]
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in exs]
    batch = rollout.collate(prompts, processor.tokenizer.pad_token_id)
    P, n = batch["input_ids"].shape[1], a.new_tokens
    kw = dict(max_new_tokens=n, min_new_tokens=n, pad_token_id=processor.tokenizer.pad_token_id, do_sample=False)

    def timed(fn):
        fn()                                                  # warm-up
        t = time.time()
        for _ in range(a.repeats):
            fn()
        return (time.time() - t) / a.repeats / n * 1000      # ms per decode step

    with torch.no_grad(), rollout.plain_generation(model):
        greedy = timed(lambda: model.generate(**batch, **kw))
        banned = rollout.vision_token_ids(processor.tokenizer)
        ours = timed(lambda: model.generate(**batch, **kw, logits_processor=LogitsProcessorList(
            [sampler.RowSampler(list(range(a.rows)), 1.0, a.top_p, banned, P)])))
        srt = timed(lambda: model.generate(**batch, **kw, logits_processor=LogitsProcessorList(
            [SortSampler(list(range(a.rows)), a.top_p, P)])))
    print(f"{a.rows} rows x {n} new tokens, V = {model.get_output_embeddings().weight.shape[0]}, T = 1, "
          f"top_p = {a.top_p}, demo model widened, CPU, {a.threads} thread(s), mean of {a.repeats}")
    print(f"{'per decode step':34s} {'ms':>8s} {'vs greedy':>10s}")
    for name, v in (("HF greedy generate() (the floor)", greedy), ("sampler.RowSampler (rollout.sample)", ours),
                    ("per-row sort + per-row Generator", srt)):
        print(f"{name:34s} {v:8.1f} {v / greedy:9.2f}x")
    return {"greedy": greedy, "ours": ours, "sort": srt}

# -----------------------------------------------------------------------------
# vocabulary-sized matmuls per scoring pass


class VocabMatmuls(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts matmuls with a vocabulary-sized operand, in units of one (tokens x V) product."""

    def __init__(self, V, D, tokens):
        super().__init__()
        self.V, self.D, self.tokens, self.units = V, D, tokens, 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
            a_, b_ = args[-2], args[-1]
            if self.V in (a_.shape + b_.shape):
                self.units += a_.shape[0] * a_.shape[1] * b_.shape[1] / (self.tokens * self.D * self.V)
        return out


def bench_head(a):
    """How many (tokens x V) matmuls each pass of a step costs, counted, with its time."""
    import data
    import rollout
    from demo import toy
    torch.set_num_threads(a.threads)
    model_dir, train_path, _ = toy.ensure()
    model, processor = rollout.load_model(model_dir, "float32", "cpu")
    V = model.get_output_embeddings().weight.shape[0]
    exs = data.load_jsonl(train_path, report=lambda *x: None)[:8]
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in exs]
    ids, mask = rollout.sample(model, processor, prompts, 1, 24, seed=0)
    T = int(mask.sum())
    passes = {
        "old policy (logp, entropy, top-K ids)": lambda: rollout.score(model, prompts, ids, mask, topk=100,
                                                                       entropy=True),
        "reference (logp, for the k3 KL)": lambda: rollout.score(model, prompts, ids, mask),
        "tutor (union support + log-probs)": lambda: rollout.score(
            model, prompts, ids, mask, union_with=torch.zeros(ids.shape + (100,), dtype=torch.long), topk=100),
        "update (logp + support, fwd + bwd)": lambda: rollout.score(
            model, prompts, ids, mask, support=torch.zeros(ids.shape + (200,), dtype=torch.long),
            grad=True)["logp"].sum().backward(),
    }
    print(f"{T} response tokens, demo model (V = {V}), chunk 256; unit: one (tokens x V) matmul")
    print(f"{'pass':40s} {'vocab matmuls':>13s} {'seconds':>8s}")
    for name, fn in passes.items():
        with VocabMatmuls(V, model.get_output_embeddings().weight.shape[1], T) as c:
            t = time.time()
            fn()
            dt = time.time() - t
        print(f"{name:40s} {c.units:13.2f} {dt:8.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description="Benchmarks: loss path memory/time, step-time breakdown.")
    p.add_argument("what", choices=["loss", "step", "rollout", "head", "_one"], help="which benchmark")
    p.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192], help="response tokens (loss)")
    p.add_argument("--vocab", type=int, default=151_936, help="vocabulary size (loss)")
    p.add_argument("--hidden", type=int, default=2048, help="hidden size (loss; Qwen3-VL-2B: 2048)")
    p.add_argument("--topk", type=int, default=100, help="K (loss)")
    p.add_argument("--chunk", type=int, default=256, help="positions per lm_head chunk (loss)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (loss)")
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 (loss)")
    p.add_argument("--mem_limit_gb", type=float, default=20.0, help="address-space cap per loss run (CPU)")
    p.add_argument("--prompts", type=int, default=16, help="prompts per step (step)")
    p.add_argument("--repeats", type=int, default=2,
                   help="steps (step) or generate() calls (rollout) averaged")
    p.add_argument("--step", type=int, default=0, help="which data step to use (step)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (step, rollout, head)")
    p.add_argument("--rows", type=int, default=16, help="rows sampled together (rollout)")
    p.add_argument("--new_tokens", type=int, default=32, help="decode steps timed (rollout)")
    p.add_argument("--top_p", type=float, default=0.99, help="nucleus (rollout)")
    p.add_argument("--path", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=2048, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.what == "_one":
        if a.device == "cpu":
            lim = int(a.mem_limit_gb * 2 ** 30)
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        return measure_one(a)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores" +
          (f", {torch.cuda.get_device_name()}" if a.device == "cuda" else ""))
    return {"loss": bench_loss, "step": bench_step, "rollout": bench_rollout, "head": bench_head}[a.what](a)


if __name__ == "__main__":
    main()
