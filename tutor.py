"""
tutor.py: what the privileged tutor reads, i.e. the frozen reference model with the hint in context,
and the chat prompt it shares with the student.

The tutor never generates and has no model of its own: it is the GRPO KL reference with a longer
prompt. This file builds its inputs only; train.py scores them with the same call as the
reference pass (rollout.score_rows, no grad) and loss.py compares the two distributions.

    can_teach(ex, context)                 which rows the gate may distil (the example has a hint)
    tutor_input(ex, images, context, ...)  question + hint block + the student's own pixels (a
                                           framed copy only when the hint asks for one with
                                           "frame": true; see hints.py)
    tutor_prompt(processor, ex, ...)       the same, encoded (encode, below): what is scored
    encode(processor, question, images, extra=None)
                                           the chat prompt both read -> input_ids,
                                           mm_token_type_ids, pixels (rollout.py re-exports it)

The chat prompt: image(s), question, format instruction, then `extra`, the hint block, which the
tutor reads and the student does not. Everything else about the two prompts is the same, pixels
included. Only the processor is used: no model, no torch import here. Copy it with hints.py.

The scoring then reads, for each distilled rollout, the tutor prompt followed by the student's
own sampled response, and returns at every response position the support S = (student top-K ids)
union (tutor top-K ids) and the tutor's log-probs on S, normalised over the whole vocabulary.

context="answer" puts the gold answer in the tutor's prompt instead of the hint: the leaky
answer-conditioned self-distillation baseline the paper compares against (kept for ablations).
context="none" is the control: the tutor reads the student's own prompt and pixels (no hint, no
frame), so the divergence pulls toward the frozen model itself. Same gate, same rows, same
divergence: what PTD-PO gains over it is what the hint teaches, not the anchoring.
context="unanswer" is the break-the-answer control: the same prompt, with the rollout's own
decisions broken in the target (loss.unanswer): wherever the frozen model gave the sampled token
less than loss.UNSURE, that token gets ~0 and the rest of its distribution is renormalised. It
pushes a failed rollout away from its own answer with no hint; what PTD-PO gains over it is what
the hint's content teaches.
Left out on purpose: a separate, larger teacher model (the point of the method is that none is
needed); video inputs and multi-turn chats (one user turn with its images).
"""
from typing import NamedTuple

import hints

CONTROLS = ("none", "unanswer")   # the tutor reads exactly the student's prompt


class TutorInput(NamedTuple):
    """One tutor prompt before encoding: encode(processor, *inp) takes it as it is."""
    question: str
    images: list      # PIL images: the student's, the first framed where the hint asks
    extra: str        # the text the tutor reads and the student does not ("" for the controls)


def can_teach(ex, context="hint"):
    """Whether the tutor has something to read for this example (the gate needs it). The
    controls ("none", "unanswer") gate on the hint too, so they distil exactly PTD-PO's rows."""
    return context == "answer" or ex.get("hint_text") is not None or bool(ex.get("hint"))


def tutor_text(ex, context="hint", box_format="norm1000", resized=None, hint_style="structured"):
    """The text the tutor reads and the student does not, or None when there is none.
    hint_style "text" renders a structured hint as one paragraph of prose (an ablation);
    resized: the (width, height) the processor resizes the image to, for pixel boxes
    (Qwen2.5-VL)."""
    if context in CONTROLS:
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


def tutor_images(ex, images, context="hint"):
    """The tutor's pictures: the student's (the list is copied, the images are not changed), the
    first framed where the hint asks for it ("frame": true)."""
    images = list(images)
    if context == "hint" and (ex.get("hint") or {}).get("frame"):
        images[0] = hints.draw_focus(images[0], ex["hint"])
    return images


def tutor_input(ex, images, context="hint", box_format="norm1000", resized=None,
                hint_style="structured"):
    """The tutor's prompt for one example, given the student's images; None if it has no hint.
    Same question and pixels as the student's prompt; only the hint block differs (and the focus
    frame, when the hint sets "frame": true). For the controls it is the student's prompt."""
    extra = tutor_text(ex, context, box_format, resized, hint_style)
    if extra is None:
        return None
    if context in CONTROLS:
        return TutorInput(ex["question"], list(images), "")
    return TutorInput(ex["question"], tutor_images(ex, images, context), extra)


def tutor_prompt(processor, ex, box_format="norm1000", context="hint", hint_style="structured",
                 images=None):
    """The tutor's encoded prompt for one example (None if it has no hint): tutor_input through
    encode. images: the student's (train.py passes them; default: the example's, opened)."""
    images = open_images(ex) if images is None else images
    resized = resized_size(processor, images[0]) if box_format == "pixels" else None
    inp = tutor_input(ex, images, context, box_format, resized, hint_style)
    return None if inp is None else encode(processor, *inp)


# -----------------------------------------------------------------------------
# the chat prompt the student and the tutor read, encoded for a Qwen-VL processor

FORMAT_PROMPT = ("First think inside <think> </think>, then give the final answer inside "
                 "<answer> </answer>.")
# Thinking templates (Qwen3-VL-*-Thinking) open <think> themselves in the generation prompt
FORMAT_PROMPT_THINKING = "After thinking, give the final answer inside <answer> </answer>."
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"   # one image's place in the chat text


def opens_think(processor):
    """True for Thinking chat templates: their generation prompt already ends in <think>."""
    msgs = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return text.rstrip().endswith("<think>")


def prompt_text(processor, question, extra=None, instruct=True, n_images=1):
    """The chat-formatted prompt: image(s), question, format instruction, then the hint block.
    Student and tutor prompts differ only by `extra` (the hint block). instruct=False leaves the
    format instruction out (the hint generator asks for JSON instead)."""
    fmt = FORMAT_PROMPT_THINKING if opens_think(processor) else FORMAT_PROMPT
    text = question.replace("<image>", "").strip() + ("\n" + fmt if instruct else "")
    if extra:
        text += "\n\n" + extra
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text.replace(IMAGE, IMAGE * n_images, 1) if n_images > 1 else text


def open_images(ex):
    """An example's images (data.py's record), decoded to RGB."""
    from PIL import Image
    return [Image.open(p).convert("RGB") for p in ex["images"]]


def encode(processor, question, images, extra=None, instruct=True):
    """One prompt -> dict(input_ids (P,), mm_token_type_ids (P,), pixel_values, image_grid_thw).
    Several images repeat the image part of the template; the demo and most benchmarks use one."""
    text = prompt_text(processor, question, extra, instruct, n_images=len(images))
    out = processor(text=[text], images=images, return_tensors="pt", return_mm_token_type_ids=True)
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids = out["input_ids"][0]
    mm = out.get("mm_token_type_ids")
    mm = mm[0] if mm is not None else (ids == image_token).long()
    return {"input_ids": ids, "mm_token_type_ids": mm.long(),
            "pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}


def resized_size(processor, image):
    """(width, height) of the image as the processor resizes it (for Qwen2.5-VL pixel boxes)."""
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
    patch = processor.image_processor.patch_size
    return int(grid[2]) * patch, int(grid[1]) * patch
