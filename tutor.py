"""
tutor.py: the privileged tutor, i.e. the frozen reference model reading the hint in context.

The tutor never generates. For each distilled rollout it reads
    [question + format instruction + hint block] + the same image (a framed copy only when the
    hint asks for one with "frame": true; see hints.py)
followed by the student's own sampled response, and returns, at every response position, the
support S = (student top-K ids) union (tutor top-K ids) and the tutor's log-probs on S,
normalised over the whole vocabulary. loss.topk_jsd then compares the student (no hint) with
it. No extra model: the tutor is the GRPO KL reference with a longer prompt.

    teach(ref_model, processor, examples, rows, response_ids, response_mask, distil, student_topk)

context="answer" puts the gold answer in the tutor's prompt instead of the hint: the leaky
answer-conditioned self-distillation baseline the paper compares against (kept for ablations).
context="none" is the control: the tutor reads the student's own prompt and pixels (no hint, no
frame), so the divergence pulls toward the frozen model itself. Same gate, same rows, same
divergence: what PTD-PO gains over it is what the hint teaches, not the anchoring.
context="unanswer" is the break-the-answer control: the same, with the rollout's own decisions
broken. Wherever the frozen model gave the sampled token less than UNSURE, that token gets ~0
(log-prob -30) and the rest of the frozen model's distribution is renormalised; elsewhere (the
format, which the frozen model is sure of) the target is the frozen model itself, as in "none".
It pushes a failed rollout away from its own answer toward the model's other candidates, with no
hint; what PTD-PO gains over it is what the hint's content teaches.
The gate (train.py) distils only rows whose example has a hint (can_teach). Left out on purpose: a separate,
larger teacher model (the point of the method is that none is needed).
"""
import torch

import hints
import rollout


def tutor_extra(ex, context, box_format, resized=None, hint_style="structured"):
    """The text the tutor reads and the student does not, or None when there is none.
    hint_style "text" renders a structured hint as one paragraph of prose (an ablation)."""
    if context in ("none", "unanswer"):
        return ""
    if context == "answer":
        return f"The correct answer is: {ex['answer']}."
    if ex.get("hint_text") is not None:   # "" is an empty hint: the tutor reads the plain prompt
        return ex["hint_text"]
    if ex.get("hint") and hint_style == "text":
        return hints.render_hint_text(ex["hint"])
    if ex.get("hint"):
        return hints.render_hint(ex["hint"], ex["image_size"], box_format, resized)
    return None


def tutor_prompt(processor, ex, box_format="norm1000", context="hint", hint_style="structured"):
    """The encoded tutor prompt of one example (None if it has no hint). Same template and
    pixels as the student's prompt; only the hint block differs (and the focus frame, when the
    hint sets "frame": true)."""
    images = rollout.open_images(ex)
    resized = rollout.resized_size(processor, images[0]) if box_format == "pixels" else None
    extra = tutor_extra(ex, context, box_format, resized, hint_style)
    if extra is None:
        return None
    if context in ("none", "unanswer"):   # the controls: exactly the student's prompt
        return rollout.encode(processor, ex["question"], images)
    return rollout.encode(processor, ex["question"], tutor_images(ex, context, images), extra)


def tutor_images(ex, context="hint", images=None):
    """The tutor's pictures: the student's, the first framed where the hint asks ("frame": true)."""
    images = rollout.open_images(ex) if images is None else images
    if context == "hint" and (ex.get("hint") or {}).get("frame"):
        images[0] = hints.draw_focus(images[0], ex["hint"])
    return images


def can_teach(ex, context="hint"):
    """Whether the tutor has something to read for this example (the gate needs it). The
    controls ("none", "unanswer") gate on the hint too, so they distil exactly PTD-PO's rows."""
    return context == "answer" or ex.get("hint_text") is not None or bool(ex.get("hint"))


@torch.no_grad()
def teach(ref_model, processor, examples, rows, response_ids, response_mask, distil, student_topk, topk=100,
          context="hint", hint_style="structured", **score_kw):
    """The tutor's side of Top-K JSD for the distilled rollouts.

    examples: the step's examples; rows: (N,) index of each rollout's example; response_ids,
    response_mask: (N, R); distil: (N,) bool, the rows to teach (each must can_teach);
    student_topk: (N, R, K) ids from the old-policy pass (None when nothing is distilled).
    hint_style: "structured" (regions with boxes, then numbered steps) or "text" (the same hint as
    prose, hints.render_hint_text: the unstructured-hint ablation). score_kw: temperature,
    token_budget, chunk_size, as for rollout.score.
    Returns dict of full-size buffers, zeros / False on rows not distilled and on padding:
    support_ids, support_mask, tutor_logp (N, R, K + topk).
    """
    N, R = response_ids.shape
    M = (student_topk.shape[-1] if student_topk is not None else topk) + topk
    if student_topk is None:
        student_topk = torch.zeros((N, R, M - topk), dtype=torch.long)
    fmt = rollout.box_format(ref_model)
    prompts, cache = [None] * N, {}
    for r in distil.nonzero().squeeze(-1).tolist():
        i = rows[r].item()
        if i not in cache:
            cache[i] = tutor_prompt(processor, examples[i], fmt, context, hint_style)
            if cache[i] is None:
                raise ValueError(f"tutor.teach: example {examples[i].get('id')} has no hint; gate on can_teach")
        prompts[r] = cache[i]
    scored = rollout.score_rows(ref_model, prompts, response_ids, response_mask, distil,
                                union_with=student_topk.cpu(), topk=topk, **score_kw)
    if scored["support_ids"] is None:   # nothing distilled on this rank
        return {"support_ids": torch.zeros((N, R, M), dtype=torch.long),
                "support_mask": torch.zeros((N, R, M), dtype=torch.bool),
                "tutor_logp": torch.zeros((N, R, M), dtype=torch.float32)}
    out = {"support_ids": scored["support_ids"], "support_mask": scored["support_mask"] & response_mask.unsqueeze(-1),
           "tutor_logp": scored["support_logp"].float()}
    if context == "unanswer":
        idx = distil.nonzero().squeeze(-1)
        out["tutor_logp"][idx] = unanswer(out["tutor_logp"][idx], out["support_ids"][idx], response_ids[idx],
                                          scored["logp"][idx].float())
    return out


UNSURE = 0.99   # the break-the-answer control breaks the tokens the frozen model gave less than this


def unanswer(logp, support_ids, response_ids, sampled_logp):
    """The break-the-answer target: logp (N, R, M) on support_ids, with the sampled token
    (response_ids (N, R), its log-prob sampled_logp (N, R)) set to -30 and the rest renormalised
    (divided by 1 - p_sampled), at positions where p_sampled < UNSURE; unchanged elsewhere.
    (A sampled token outside the support keeps its mass in the tail: rare at K = 100.)"""
    unsure = (sampled_logp < torch.log(torch.tensor(UNSURE))).unsqueeze(-1)      # (N, R, 1)
    is_sampled = support_ids == response_ids.unsqueeze(-1)                        # (N, R, M)
    rest = logp - torch.log1p(-sampled_logp.exp().clamp(max=1 - 1e-6)).unsqueeze(-1)
    broken = torch.where(is_sampled, torch.full_like(logp, -30.0), rest)
    return torch.where(unsure, broken, logp)
