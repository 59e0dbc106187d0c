"""
decode.py: the model as a fast CUDA sampler.

    fast = decode.FastSampler(policy, torch.bfloat16)  # once per run: a bf16 copy for generation
    ids, mask = rollout.sample(policy, ..., fast=fast) # each generation batch goes through it
    fast.refresh(policy)                               # after the optimiser: new weights, in place

rollout.sample's plain path, HF generate(), spends ~41 ms per decode step on 64 rows of a 2B model
on an H200, ~25x the memory-bandwidth floor: per-token Python, a cache that grows every layer,
well over a thousand small kernel launches and host syncs in the sampler. This file samples the
same tokens:
- HF's own forward runs the prefill (vision tower, M-RoPE positions, the prompt's K/V); the K/V go
  into a static cache allocated once (rows x length; grown only when a call needs more).
- A short loop over the model's weights then decodes one token for every row per step: RMSNorm,
  one fused q/k/v matmul, rotary, attention over the cache, one fused gate/up matmul, lm-head, and
  the sampler. Each step is captured as a CUDA graph, one graph per attention window (multiples of
  WINDOW cache columns, so early steps do not read the empty end of the cache): one launch a step.
- On CUDA, torch.compile fuses the elementwise work (norms, rotary, SiLU, the sampler's hashing)
  into a few kernels: graphs remove launch overhead, not the kernels themselves.
- Grouped KV heads: the g query heads that share a KV head attend as g query rows of that head,
  so K and V are read once and never copied per query head.
- The sampler is sampler.py's, called without host syncs (sampler.choose): every row makes all
  its draws at once and gets the exact nucleus check. A row still without a token after `tries`
  draws (probability (1 - top_p)^8 per token) is reported, and rollout.sample re-runs that batch
  with HF generate() on the same copy. Tokens are the plain path's: the same streams (row key,
  tokens so far) and the same draws; tests/test_decode.py checks tokens and per-step logits on CPU.
- The copy holds the policy's parameters cast to the compute dtype (what generate() sees through
  rollout.gathered), refreshed one FSDP unit at a time (gathered in bf16, copied in): no FSDP hook
  runs inside a graph and no parameter address ever changes. Memory: 2 bytes x parameters (3.4 GB
  for a 2B model) plus the static cache (rows x length x rollout.kv_bytes_per_token), both held
  for the run; rows x length stays within --kv_cache_gb and FREE_SHARE of the free memory.
- Fallbacks, each a one-line warning (once) and a note in `status`: a step that fails to compile
  runs eagerly; a failed graph capture leaves the steps eager (still far faster than generate()); an
  exception in generate() hands that batch and the rest of the run to HF generate() on the copy;
  a sampler that cannot be built leaves the run on the plain path (for_run). --no_compile and
  --no_cuda_graphs turn the two features off for bisecting.
Left out: paged or continuous batching (a finished row keeps its slot until the batch ends; the
loop stops once every row has finished, looked at every CHECK_EVERY steps), a split-KV
(flash-decoding) attention kernel (attention is PyTorch's SDPA over the window), speculative
decoding, sliding-window layers and RoPE types other than the default (Qwen2.5-VL and Qwen3-VL use
neither).
Run: tests/test_decode.py (CPU), tests/test_cuda.py and scripts/gpu_check.sh (GPU, timings).
"""
import contextlib
import copy
import warnings

import torch
import torch.nn.functional as F

import rollout
from sampler import choose

WINDOW = 128       # attention windows are multiples of this many cache columns
CHECK_EVERY = 16   # decode steps between the host's looks at "has every row finished?" (a sync)
FREE_SHARE = 0.5   # the static cache takes at most this share of the GPU memory free when it grows
# the decode step's attention on CUDA: pinned, never left to chance
SDPA_BACKENDS = [torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION,
                 torch.nn.attention.SDPBackend.MATH]

# -----------------------------------------------------------------------------
# one decode step, as pure functions of tensors (what torch.compile fuses on CUDA)


def rms_norm(x, w, eps):
    """Qwen's RMSNorm as HF computes it: statistics in fp32, weight applied in the input dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def rotate(x, cos, sin):
    """Rotary embedding of x (R, H, d) at one position per row; cos, sin: (R, 1, d)."""
    x1, x2 = x.chunk(2, -1)
    return x * cos + torch.cat((-x2, x1), -1) * sin


def attn_in(x, w, cos, sin, heads, eps):
    """Norm, the fused q/k/v matmul, q/k norms (Qwen3-VL) and rotary.
    (R, D) -> q (R, Hq, d), k (R, Hkv, d), v (R, Hkv, d)."""
    hq, hkv, d = heads
    qkv = (F.linear(rms_norm(x, w["ln1"], eps), w["qkv"], w["qkv_bias"])
           .view(len(x), hq + 2 * hkv, d))
    q, k, v = qkv.split([hq, hkv, hkv], 1)
    if w["q_norm"] is not None:
        q, k = rms_norm(q, w["q_norm"], eps), rms_norm(k, w["k_norm"], eps)
    return rotate(q, cos, sin), rotate(k, cos, sin), v


def attn_out_mlp(x, o, w, eps):
    """Output projection and residual, then norm, SwiGLU MLP (fused gate/up) and residual:
    (R, D)."""
    x = x + F.linear(o, w["o"], w["o_bias"])
    gate, up = F.linear(rms_norm(x, w["ln2"], eps), w["gate_up"]).chunk(2, -1)
    return x + F.linear(F.silu(gate) * up, w["down"])


def capturing():
    """True while this thread's CUDA stream is recording a graph."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def compiled(fn, failed):
    """torch.compile(fn) with static shapes; fn itself if compiling fails (an op Inductor lacks, no
    working Triton): slower, same numbers, reported once through failed(what, error, then).
    An error while a graph is being recorded is re-raised: eager code cannot rescue a capture that
    is already broken, and the capture's own fallback (FastSampler.advance) takes over."""
    fast = torch.compile(fn, dynamic=False)

    def call(*args):
        nonlocal fast
        if fast is fn:
            return fn(*args)
        try:
            return fast(*args)
        except Exception as e:   # compile errors surface at the first call
            if capturing():
                raise
            failed(f"torch.compile({fn.__name__})", e, "running it eagerly")
            fast = fn
            return fn(*args)
    return call

# -----------------------------------------------------------------------------
# the generation copy


def generation_copy(model, dtype):
    """A plain model of the same config in dtype on the model's device: no shards, no hooks."""
    from transformers import AutoModelForImageTextToText
    with torch.device(next(model.parameters()).device):
        gen = AutoModelForImageTextToText.from_config(copy.deepcopy(model.config), dtype=dtype,
                                                      attn_implementation="sdpa")
    return gen.eval().requires_grad_(False)


def fuse(linears):
    """One weight (and bias) for linears that read the same input, so they are one matmul. Each
    module's parameter becomes a view of its rows: HF's forward (the prefill) still works, and
    refresh() writes through the views into the fused tensors. Returns (weight, bias or None)."""
    out = []
    for name in ("weight", "bias"):
        parts = [getattr(m, name) for m in linears]
        if parts[0] is None:
            out.append(None)
            continue
        whole, start = torch.cat([p.detach() for p in parts]), 0
        for m, p in zip(linears, parts):
            setattr(m, name, torch.nn.Parameter(whole[start:start + len(p)], requires_grad=False))
            start += len(p)
        out.append(whole)
    return out


def layer_weights(layer):
    """One decoder layer's weights as plain tensors (views of the copy's parameters)."""
    a, m = layer.self_attn, layer.mlp
    qkv, qkv_bias = fuse([a.q_proj, a.k_proj, a.v_proj])
    gate_up, _ = fuse([m.gate_proj, m.up_proj])
    t = lambda p: None if p is None else p.detach()   # noqa: E731
    qn, kn = getattr(a, "q_norm", None), getattr(a, "k_norm", None)
    return {"ln1": t(layer.input_layernorm.weight), "qkv": qkv, "qkv_bias": qkv_bias,
            "q_norm": t(qn.weight) if qn is not None else None,
            "k_norm": t(kn.weight) if kn is not None else None,
            "o": t(a.o_proj.weight), "o_bias": t(a.o_proj.bias),
            "ln2": t(layer.post_attention_layernorm.weight),
            "gate_up": gate_up, "down": t(m.down_proj.weight)}


def check_supported(text, config):
    """The decode loop writes out Qwen2.5-VL / Qwen3-VL's text layers; refuse anything else."""
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    problems = [f"RoPE type {rope}" if rope != "default" else "",
                f"activation {config.hidden_act}" if config.hidden_act != "silu" else "",
                "sliding-window layers" if getattr(config, "use_sliding_window", False) else "",
                "not a Qwen-VL text model" if not hasattr(text, "rotary_emb") else ""]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError(f"decode.FastSampler does not support {', '.join(problems)}: use the "
                         f"plain path")

# -----------------------------------------------------------------------------
# the sampler


def for_run(model, args, device):
    """train.py's and eval.py's sampler: None (HF generate()) off CUDA or with --plain_generate,
    else a FastSampler with the run's switches; None, with a one-line warning, if it cannot be
    built. Under FSDP2 every rank must agree: a failure here (an unsupported model) is the same
    on all."""
    if device.type != "cuda" or args.plain_generate:
        return None
    try:
        return FastSampler(model, rollout.resolve_dtype(args.dtype, device),
                           compile=not args.no_compile, graphs=not args.no_cuda_graphs)
    except Exception as e:
        warnings.warn(f"decode.py: building the fast sampler failed ({one_line(e)}); sampling with "
                      f"HF generate()")
        return None


def one_line(e):
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


class FastSampler:
    """A generation copy of the policy, a static KV cache and the captured decode steps.
    compile, graphs: None = on CUDA only (the switches turn them off; graphs need CUDA).
    status: what ran (graphs captured and replayed, eager steps) and which fallbacks were taken."""

    def __init__(self, model, dtype, compile=None, graphs=None, tries=8):
        self.model = generation_copy(model, dtype)
        text, c = self.model.model.language_model, self.model.config.get_text_config()
        check_supported(text, c)
        self.heads = (c.num_attention_heads, c.num_key_value_heads,
                      getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
        self.eps, self.tries, self.dtype = c.rms_norm_eps, tries, dtype
        self.layers = [layer_weights(layer) for layer in text.layers]
        self.embed, self.norm = text.embed_tokens.weight.detach(), text.norm.weight.detach()
        self.head = self.model.lm_head.weight.detach()
        self.inv_freq, self.rope_scale = text.rotary_emb.inv_freq, text.rotary_emb.attention_scaling
        self.device = self.embed.device
        self.kv_bytes = rollout.kv_bytes_per_token(self.model)
        cuda = self.device.type == "cuda"
        self.status = {"captured": 0, "replayed": 0, "eager_steps": 0, "fallbacks": []}
        self.broken = False            # set by a failed generate(): HF generate() from then on
        wrap = ((lambda f: compiled(f, self.failed)) if (cuda if compile is None else compile)
                else (lambda f: f))
        self._attn_in, self._attn_out_mlp, self._choose = (wrap(attn_in), wrap(attn_out_mlp),
                                                           wrap(choose))
        # None: eager steps (CPU, the switch)
        self.graphs = {} if cuda and graphs is not False else None
        self.attention = ((lambda: torch.nn.attention.sdpa_kernel(SDPA_BACKENDS)) if cuda
                          else contextlib.nullcontext)
        self.rows = self.length = self.allocations = 0
        self.banned = {}
        mine = {n for n, _ in self.model.named_parameters()}
        theirs = {n for n, _ in model.named_parameters()}
        if mine != theirs:
            raise ValueError(f"generation copy and policy name different parameters: "
                             f"{sorted(mine ^ theirs)[:5]}")
        self.refresh(model)

    def failed(self, what, error, then):
        """A fallback taken: one warning line the first time `what` fails, and a note in status."""
        if what not in self.status["fallbacks"]:
            self.status["fallbacks"].append(what)
            warnings.warn(f"decode.py: {what} failed ({one_line(error)}); {then}")

    @torch.no_grad()
    def refresh(self, policy):
        """Copy the policy's weights in, one FSDP unit at a time: each unit's unshard() all-gathers
        its parameters in FSDP2's param_dtype (bf16 on CUDA, one collective per unit, so every rank
        must call this), then copy_ casts them to this copy's dtype. No address changes: graphs stay
        valid."""
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor
        mine = dict(self.model.named_parameters())
        units = ([(n, m) for n, m in policy.named_modules() if isinstance(m, FSDPModule)]
                 or [("", None)])
        for prefix, unit in units:
            if unit is not None:
                unit.unshard()
            for name, p in (policy if unit is None else unit).named_parameters(prefix=prefix):
                if unit is None or not isinstance(p, DTensor):   # a DTensor belongs to another unit
                    mine[name].copy_(p)
            if unit is not None:
                unit.reshard()

    def padded(self, length):
        """A cache length in whole attention windows."""
        return -(-length // WINDOW) * WINDOW

    def token_budget(self, tokens):
        """At most `tokens` cache tokens (rows x length), and on CUDA at most FREE_SHARE of the
        memory free now (the allocator's idle blocks and this cache count as free: it is dropped
        first)."""
        if self.device.type != "cuda":
            return tokens
        idle = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        free = (torch.cuda.mem_get_info(self.device)[0] + idle
                + self.rows * self.length * self.kv_bytes)
        return min(tokens, int(FREE_SHARE * free / self.kv_bytes))

    def _reserve(self, rows, length, max_tokens):
        """The static cache and step state for rows x length (length in whole windows), allocated
        once and grown only when a call needs more: to the larger rows and the larger length where
        their product fits max_tokens, else to this call's own. Growing drops the captured
        graphs."""
        length = self.padded(length)
        if rows <= self.rows and length <= self.length:
            return
        R, L = max(rows, self.rows), max(length, self.length)
        if R * L > max_tokens:
            R, L = rows, length
        self.rows, self.length, (_, hkv, d), dev = R, L, self.heads, self.device
        self.graphs = None if self.graphs is None else {}
        self.pool = None                                       # made by the first capture
        self.k = self.v = None                                 # free the old cache first
        self.k = torch.zeros(len(self.layers), R, hkv, L, d, dtype=self.dtype, device=dev)
        self.v = torch.zeros_like(self.k)
        # cache columns a row attends to
        self.valid = torch.zeros(R, L, dtype=torch.bool, device=dev)
        self.tok, self.pos, self.keys = (torch.zeros(R, dtype=torch.long, device=dev)
                                         for _ in range(3))
        self.col, self.step = (torch.zeros(1, dtype=torch.long, device=dev),
                               torch.zeros(1, dtype=torch.long, device=dev))
        # fp32, as generate() hands them over
        self.logits = torch.zeros(R, self.head.shape[0], device=dev)
        self.out = torch.zeros(R, L, dtype=torch.long, device=dev)       # the sampled tokens
        self.done, self.unlucky = (torch.zeros(R, dtype=torch.bool, device=dev),
                                   torch.zeros(R, dtype=torch.bool, device=dev))
        self.allocations += 1

    @torch.no_grad()
    def start(self, batch, keys, max_new_tokens, temperature, top_p, banned, eos,
              max_tokens=2 ** 62):
        """Prefill one left-padded batch with HF's forward, fill the static state, draw token 0."""
        B, P = batch["input_ids"].shape
        self._reserve(B, P + max_new_tokens, max_tokens)
        out = self.model(**batch, use_cache=True, logits_to_keep=1)
        # transformers 5.24 / earlier
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        for i, layer in enumerate(cache.layers):
            self.k[i, :B, :, :P] = layer.keys
            self.v[i, :B, :, :P] = layer.values
        attn = batch["attention_mask"].bool()
        self.valid.zero_()
        self.valid[:B, :P] = attn
        # spare rows (a smaller batch in a bigger cache) attend to something
        self.valid[B:, 0] = True
        # a generated token is text: its three M-RoPE positions are equal, last prompt position
        # + 1 = real prompt tokens + the row's rope delta (HF's own decode rule)
        self.pos.zero_()
        self.pos[:B] = attn.sum(1) + self.model.model.rope_deltas.view(-1).to(self.device)
        self.keys.zero_()
        self.keys[:B] = torch.as_tensor(keys).to(self.device)
        self.logits.zero_()
        self.logits[:B] = out.logits[:, -1]
        self.done.fill_(True)
        self.done[:B] = False          # spare rows count as finished
        self.unlucky.zero_()
        self.col.fill_(P)
        self.step.zero_()
        self.rule = (float(temperature), float(top_p), int(eos), tuple(banned))
        if self.rule not in self.banned:   # kept for the run: captured graphs read these addresses
            self.banned[self.rule] = torch.tensor(banned, dtype=torch.long, device=self.device)
        self._pick()
        self.width, self.n = P, 1      # prompt width, tokens drawn so far (host copies: no sync)

    def _pick(self):
        """Draw every row's next token from self.logits with its stream at self.step; record it."""
        temperature, top_p, eos, _ = self.rule
        tok, unlucky = self._choose(self.logits, self.keys, self.step, self.banned[self.rule],
                                    temperature, top_p, self.tries)
        self.unlucky |= unlucky & ~self.done
        self.out.index_copy_(1, self.step, tok.unsqueeze(1))
        self.done |= tok == eos
        self.tok.copy_(tok)
        self.step += 1

    def _decode(self, w):
        """One decode step on the static state, attending to the first w cache columns."""
        (hq, hkv, d), R = self.heads, self.rows
        x = F.embedding(self.tok, self.embed)                       # (R, D)
        freqs = self.pos.unsqueeze(-1).float() * self.inv_freq      # (R, d/2), as HF's rotary
        emb = torch.cat((freqs, freqs), -1).unsqueeze(1)            # (R, 1, d)
        cos, sin = ((emb.cos() * self.rope_scale).to(x.dtype),
                    (emb.sin() * self.rope_scale).to(x.dtype))
        self.valid.index_fill_(1, self.col, True)
        bias = self.valid[:, :w].to(x.dtype).log()[:, None, None]   # (R, 1, 1, w): 0 or -inf
        for i, lw in enumerate(self.layers):
            q, k, v = self._attn_in(x, lw, cos, sin, self.heads, self.eps)
            self.k[i].index_copy_(2, self.col, k.unsqueeze(2))
            self.v[i].index_copy_(2, self.col, v.unsqueeze(2))
            # (R, Hkv, g, d) queries against (R, Hkv, w, d) keys: grouped heads, nothing copied
            with self.attention():
                o = F.scaled_dot_product_attention(q.reshape(R, hkv, hq // hkv, d),
                                                   self.k[i, :, :, :w], self.v[i, :, :, :w],
                                                   attn_mask=bias)
            x = self._attn_out_mlp(x, o.reshape(R, hq * d), lw, self.eps)
        self.logits.copy_(F.linear(rms_norm(x, self.norm, self.eps), self.head))
        self.col += 1
        self.pos += 1
        self._pick()

    def _warm_up(self, w):
        """One eager step (it warms up cuBLAS and compiles on first use), on a side stream on CUDA
        as graph capture wants."""
        self.status["eager_steps"] += 1
        if self.device.type != "cuda":
            return self._decode(w)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._decode(w)
        torch.cuda.current_stream().wait_stream(side)

    def _record(self, w):
        """This step as a CUDA graph. Recording runs nothing, so the state does not advance."""
        graph = torch.cuda.CUDAGraph()
        self.pool = self.pool or torch.cuda.graph_pool_handle()          # one memory pool per cache
        # thread_local: other threads (NCCL's watchdog under torchrun) may touch CUDA meanwhile
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            self._decode(w)
        return graph

    def advance(self):
        """One decode step: the captured graph for this step's window, else an eager step that is
        then recorded for the later steps with this window (or stays eager: CPU, the switch, a
        capture that failed)."""
        col = self.width + self.n - 1           # the cache column this step's input fills
        w = min(self.length, (col // WINDOW + 1) * WINDOW)
        key = (w, self.rule)
        if self.graphs is not None and key in self.graphs:
            self.graphs[key].replay()
            self.status["replayed"] += 1
        elif self.graphs is None:
            self.status["eager_steps"] += 1
            self._decode(w)
        else:
            self._warm_up(w)
            try:
                self.graphs[key] = self._record(w)
                self.status["captured"] += 1
            except Exception as e:
                self.failed("CUDA graph capture", e,
                            "decoding with eager steps for the rest of the run")
                self.graphs = None
        self.n += 1

    def steps(self, k):
        """k decode steps with no host sync (tests/test_cuda.py checks that with sync debug
        mode)."""
        for _ in range(k):
            self.advance()

    @torch.no_grad()
    def generate(self, batch, keys, max_new_tokens, temperature, top_p, banned, eos,
                 max_tokens=2 ** 62):
        """(B, n) tokens of one left-padded batch (n <= max_new_tokens: the loop stops once every
        row has drawn EOS), or None, and rollout.sample runs the batch through HF generate() on the
        copy: when a row drew no token in `tries` draws (sample_rows' sorted fallback), when the
        batch needs more than max_tokens cache tokens, and after an exception here (then for the
        rest of the run)."""
        B, P = batch["input_ids"].shape
        if self.broken:
            return None
        if B * self.padded(P + max_new_tokens) > max_tokens:
            self.failed("fitting the KV budget",
                        MemoryError(f"{B} rows x {P + max_new_tokens} tokens"),
                        "sampling such calls with HF generate()")
            return None
        try:
            return self._generate(batch, keys, max_new_tokens, temperature, top_p, banned, eos,
                                  max_tokens)
        except Exception as e:
            self.failed("the fast decode loop", e,
                        "sampling with HF generate() on the copy for the rest of the run")
            self.broken = True
            return None

    def _generate(self, batch, keys, max_new_tokens, temperature, top_p, banned, eos, max_tokens):
        B = batch["input_ids"].shape[0]
        self.start(batch, keys, max_new_tokens, temperature, top_p, banned, eos, max_tokens)
        while self.n < max_new_tokens:
            self.steps(min(CHECK_EVERY - self.n % CHECK_EVERY, max_new_tokens - self.n))
            if self.n < max_new_tokens and bool(self.done.all()):   # the loop's only host sync
                break
        return None if bool(self.unlucky.any()) else self.out[:B, :self.n].clone()   # out is reused
