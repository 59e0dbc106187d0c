"""tutor.py's prompts scored as train.py's tutor pass scores them: alignment, it sees the image,
the hint matters, the support is right, the gate."""
import pytest
import torch
from PIL import Image

import data
import hints
import loss
import rollout
import train
import tutor
from test_rollout import ragged_responses, single_row_logp


def teach(model, processor, exs, rows, ids, mask, distil, student_topk, topk=100, context="hint",
          hint_style="structured", **score_kw):
    """train.train_step's tutor pass (step 7) on its own: the tutor's prompts (tutor.py), scored
    by the frozen model with the reference pass's call, into full-size (N, R, M) buffers."""
    images = [rollout.open_images(ex) for ex in exs]
    prompts = train.tutor_rows(processor, rollout.box_format(model), exs, images, rows, distil,
                               context, hint_style)
    scored = rollout.score_rows(model, prompts, ids, mask, distil, union_with=student_topk,
                                topk=topk, **score_kw)
    batch = train.Batch(None, ids, mask, None, None, None, distil)
    train.tutor_targets(batch, scored, student_topk.shape[-1] + topk, context)
    return {"support_ids": batch.support_ids, "support_mask": batch.support_mask,
            "tutor_logp": batch.tutor_logp}


def student_topk(model, processor, exs, ids, mask, k=5):
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in exs]
    return rollout.score(model, prompts, ids, mask, topk=k)["topk_ids"]


def run_teach(model, processor, exs, ids, mask, k=5, **kw):
    top = student_topk(model, processor, exs, ids, mask, k)
    every = torch.ones(len(exs), dtype=torch.bool)
    return teach(model, processor, exs, torch.arange(len(exs)), ids, mask, every, top, topk=k, **kw), top


def test_tutor_matches_unpadded_single_row_hinted_forward(tiny, examples):
    model, processor, _ = tiny
    exs = examples[:4]
    ids, mask = ragged_responses(processor.tokenizer, 4)
    # the sampled token is always in the support: score it by putting it in the student top-K
    top = torch.cat([ids.unsqueeze(-1), student_topk(model, processor, exs, ids, mask, 4)], -1)
    out = teach(model, processor, exs, torch.arange(4), ids, mask, torch.ones(4, dtype=torch.bool), top, topk=4)
    for i, ex in enumerate(exs):
        p = tutor.tutor_prompt(processor, ex, rollout.box_format(model))
        assert "Hint:" in processor.tokenizer.decode(p["input_ids"])
        ref, _ = single_row_logp(model, p, ids[i][mask[i]])
        sup, lp = out["support_ids"][i][mask[i]], out["tutor_logp"][i][mask[i]]
        got = lp.gather(-1, (sup == ids[i][mask[i]].unsqueeze(-1)).float().argmax(-1, keepdim=True)).squeeze(-1)
        assert torch.allclose(got, ref, atol=1e-5)


def test_tutor_sees_the_image(tiny, examples, tmp_path):
    model, processor, _ = tiny
    ex = examples[0]
    ids, mask = ragged_responses(processor.tokenizer, 1)
    a, top = run_teach(model, processor, [ex], ids, mask)
    other = tmp_path / "other.png"
    Image.new("RGB", ex["image_size"], (0, 255, 0)).save(other)
    ex2 = {**ex, "images": [str(other)]}
    b = teach(model, processor, [ex2], torch.arange(1), ids, mask, torch.ones(1, dtype=torch.bool), top,
                    topk=5)
    diff = (a["tutor_logp"] - b["tutor_logp"]).abs()[a["support_mask"] & b["support_mask"]]
    assert diff.max() > 1e-4


def test_the_hint_matters_and_an_empty_hint_is_the_plain_reference(tiny, examples):
    model, processor, _ = tiny
    ex = {**examples[1], "hint": {k: v for k, v in examples[1]["hint"].items() if k != "frame"}}
    ids, mask = ragged_responses(processor.tokenizer, 1)
    a, top = run_teach(model, processor, [ex], ids, mask)
    other = {**ex, "hint": {"regions": [], "steps": ["Something else entirely."]}}
    b = teach(model, processor, [other], torch.arange(1), ids, mask, torch.ones(1, dtype=torch.bool), top,
                    topk=5)
    both = a["support_mask"] & b["support_mask"]
    assert (a["tutor_logp"] - b["tutor_logp"]).abs()[both].max() > 1e-4
    # an empty hint: the tutor's prompt is the student's, so its log-probs are the reference's
    empty = {**ex, "hint": None, "hint_text": ""}
    c = teach(model, processor, [empty], torch.arange(1), ids, mask, torch.ones(1, dtype=torch.bool), top,
                    topk=5)
    plain = rollout.encode(processor, ex["question"], rollout.open_images(ex))
    ref = rollout.score(model, [plain], ids, mask, support=c["support_ids"])
    assert torch.equal(c["tutor_logp"][c["support_mask"]], ref["support_logp"][c["support_mask"]])


def test_support_holds_both_topk_sets_without_duplicates(tiny, examples):
    model, processor, _ = tiny
    exs = examples[:2]
    ids, mask = ragged_responses(processor.tokenizer, 2)
    out, top = run_teach(model, processor, exs, ids, mask, k=6)
    fmt = rollout.box_format(model)
    tut = rollout.score(model, [tutor.tutor_prompt(processor, ex, fmt) for ex in exs], ids, mask, topk=6)["topk_ids"]
    assert out["support_ids"].shape[-1] == 12
    for i in range(2):
        for t in range(ids.shape[1]):
            sup = out["support_ids"][i, t][out["support_mask"][i, t]].tolist()
            if not mask[i, t]:
                assert not sup
                continue
            assert len(sup) == len(set(sup))
            assert set(sup) == set(top[i, t].tolist()) | set(tut[i, t].tolist())


def test_only_distilled_rows_are_taught_and_the_buffers_are_full_size(tiny, examples):
    model, processor, _ = tiny
    exs = examples[:3]
    ids, mask = ragged_responses(processor.tokenizer, 3)
    top = student_topk(model, processor, exs, ids, mask)
    distil = torch.tensor([True, False, True])
    out = teach(model, processor, exs, torch.arange(3), ids, mask, distil, top, topk=5)
    assert out["support_ids"].shape == (3, ids.shape[1], 10)
    assert not out["support_mask"][1].any() and (out["tutor_logp"][1] == 0).all()
    assert out["support_mask"][0].any() and out["support_mask"][2].any()
    assert not out["support_mask"][~mask].any()                         # padding is never in the support


def test_the_gate_needs_a_hint_and_teach_refuses_an_unhinted_row(tiny, examples):
    model, processor, _ = tiny
    bare = {**examples[1], "hint": None, "hint_text": None}
    assert tutor.can_teach(examples[0]) and not tutor.can_teach(bare)
    assert tutor.can_teach(bare, context="answer")
    ids, mask = ragged_responses(processor.tokenizer, 1)
    top = student_topk(model, processor, [bare], ids, mask)
    with pytest.raises(ValueError, match="no hint"):
        teach(model, processor, [bare], torch.arange(1), ids, mask, torch.ones(1, dtype=torch.bool), top, topk=5)


def test_answer_context_puts_the_answer_in_the_tutor_prompt(tiny, examples):
    model, processor, _ = tiny
    ex = examples[0]
    text = processor.tokenizer.decode(tutor.tutor_prompt(processor, ex, context="answer")["input_ids"])
    assert f"The correct answer is: {ex['answer']}." in text and "Hint:" not in text


def test_student_and_tutor_prompts_differ_only_by_the_hint_block(tiny, examples):
    model, processor, _ = tiny
    ex = examples[2]
    s = processor.tokenizer.decode(rollout.encode(processor, ex["question"], rollout.open_images(ex))["input_ids"])
    t = processor.tokenizer.decode(tutor.tutor_prompt(processor, ex)["input_ids"])
    block = hints.render_hint(ex["hint"], ex["image_size"], rollout.box_format(model))
    assert t.replace("\n\n" + block, "") == s


def test_the_free_text_hint_style_gives_the_tutor_prose_in_place_of_the_structured_block(tiny, examples):
    model, processor, _ = tiny
    ex = examples[2]
    s = processor.tokenizer.decode(tutor.tutor_prompt(processor, ex)["input_ids"])
    t = processor.tokenizer.decode(tutor.tutor_prompt(processor, ex, hint_style="text")["input_ids"])
    block = hints.render_hint(ex["hint"], ex["image_size"], rollout.box_format(model))
    assert t == s.replace(block, hints.render_hint_text(ex["hint"])) and t != s
    ids, mask = ragged_responses(processor.tokenizer, 2)
    a, _ = run_teach(model, processor, examples[2:4], ids, mask)
    b, _ = run_teach(model, processor, examples[2:4], ids, mask, hint_style="text")
    assert torch.equal(a["support_mask"][:, :, :5], b["support_mask"][:, :, :5])
    assert not torch.allclose(a["tutor_logp"], b["tutor_logp"])


def test_tutor_gets_the_students_pixels_unless_the_hint_asks_for_a_frame(tiny, examples):
    """The demo's hints are words only (no "frame"): the tutor sees the student's exact pixels.
    "frame": true stays an opt-in for users, and then the tutor's copy carries the frame."""
    model, processor, _ = tiny
    assert not any("frame" in ex["hint"] for ex in examples)
    ex = examples[0]
    student = rollout.encode(processor, ex["question"], rollout.open_images(ex))
    framed = tutor.tutor_prompt(processor, {**ex, "hint": {**ex["hint"], "frame": True}},
                                rollout.box_format(model))
    plain = tutor.tutor_prompt(processor, ex, rollout.box_format(model))
    assert torch.equal(plain["pixel_values"], student["pixel_values"])
    assert not torch.equal(framed["pixel_values"], student["pixel_values"])


def test_the_no_hint_control_reads_exactly_the_students_prompt(tiny, examples):
    """--tutor_context none: the tutor's prompt equals the student's token for token and pixel for
    pixel (no hint block, no frame), and the gate still distils only hinted rows."""
    model, processor, _ = tiny
    for ex in examples[:6]:
        student = rollout.encode(processor, ex["question"], rollout.open_images(ex))
        control = tutor.tutor_prompt(processor, ex, rollout.box_format(model), context="none")
        assert control.keys() == student.keys()
        for k in student:
            assert torch.equal(control[k], student[k]), k
    bare = {**examples[1], "hint": None, "hint_text": None}
    assert tutor.can_teach(examples[0], context="none") and not tutor.can_teach(bare, context="none")


def test_the_no_hint_control_teaches_the_reference_distribution(tiny, examples):
    """With context "none" the tutor's log-probs on the union support are the frozen model's own
    log-probs on the student prompt, and they differ from the hinted tutor's."""
    model, processor, _ = tiny
    ids, mask = ragged_responses(processor.tokenizer, 2)
    exs = examples[:2]
    top = student_topk(model, processor, exs, ids, mask)
    every = torch.ones(2, dtype=torch.bool)
    none = teach(model, processor, exs, torch.arange(2), ids, mask, every, top, topk=5, context="none")
    hint = teach(model, processor, exs, torch.arange(2), ids, mask, every, top, topk=5, context="hint")
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in exs]
    ref = rollout.score(model, prompts, ids, mask, support=none["support_ids"])
    m = none["support_mask"]
    assert torch.allclose(none["tutor_logp"][m], ref["support_logp"][m].float(), atol=1e-5)
    assert not torch.allclose(none["tutor_logp"][m], hint["tutor_logp"][m], atol=1e-3)


def test_the_break_the_answer_target_removes_the_unsure_sampled_token_and_renormalises():
    """loss.unanswer on a hand-made distribution: where the frozen model gave the sampled token
    p < UNSURE, that token gets ~0 and every other probability (tail included) is divided by
    1 - p; where it was sure, the target is untouched."""
    probs = torch.tensor([[[0.6, 0.2, 0.1, 0.05], [0.995, 0.002, 0.001, 0.001]]])   # (1, 2, 4), tails .05, .001
    support = torch.tensor([[[7, 3, 9, 4], [5, 3, 9, 4]]])
    sampled = torch.tensor([[7, 5]])
    out = loss.unanswer(probs.log(), support, sampled, torch.tensor([[0.6, 0.995]]).log()).exp()
    assert out[0, 0, 0] < 1e-12
    assert torch.allclose(out[0, 0, 1:], probs[0, 0, 1:] / 0.4)
    assert torch.allclose(1 - out[0, 0].sum(), torch.tensor(0.05 / 0.4), atol=1e-6)   # the tail, renormalised
    assert torch.allclose(out[0, 1], probs[0, 1])                                     # sure: unchanged


def test_the_break_the_answer_control_reads_the_students_prompt_and_breaks_its_own_tokens(tiny, examples):
    """--tutor_context unanswer: the no-hint control's target (same prompt, rows and support),
    with the rollout's own unsure tokens removed; no hint and no frame reach the tutor."""
    model, processor, _ = tiny
    exs = examples[:2]
    prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in exs]
    ids, mask = rollout.sample(model, processor, prompts, 1, 6, temperature=0)   # greedy: in the support
    top = student_topk(model, processor, exs, ids, mask)
    every = torch.ones(2, dtype=torch.bool)
    none = teach(model, processor, exs, torch.arange(2), ids, mask, every, top, topk=5, context="none")
    broken = teach(model, processor, exs, torch.arange(2), ids, mask, every, top, topk=5, context="unanswer")
    assert torch.equal(none["support_ids"], broken["support_ids"]) and torch.equal(none["support_mask"],
                                                                                   broken["support_mask"])
    p_sampled = rollout.score(model, prompts, ids, mask)["logp"].exp()
    expected = loss.unanswer(none["tutor_logp"], none["support_ids"], ids, p_sampled.log())
    m = none["support_mask"]
    assert torch.allclose(broken["tutor_logp"][m], expected[m], atol=1e-4)
    hit = (none["support_ids"] == ids.unsqueeze(-1)) & m & (p_sampled < loss.UNSURE).unsqueeze(-1)
    assert hit.any() and (broken["tutor_logp"][hit] <= -29).all()                   # the sampled tokens: ~0
    assert tutor.can_teach(examples[0], "unanswer") and tutor.tutor_prompt(
        processor, examples[0], rollout.box_format(model), context="unanswer")["input_ids"].equal(prompts[0]["input_ids"])


def test_tutor_copies_with_hints_alone():
    """tutor.py builds the tutor's inputs (and the chat prompt both read) and scores nothing: its
    imports, nested ones included, are hints.py and Pillow, so no model code comes with a copy."""
    import ast
    import os

    def imports(module):
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), module + ".py")
        names = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
        return names
    assert imports("tutor") == {"typing", "hints", "PIL"}
    assert imports("hints") <= {"PIL", "math", "re", "json"}
