"""
prompts.py: the chat prompt the student and the tutor read, encoded for a Qwen-VL processor.

    encode(processor, question, images, extra=None)   -> input_ids, mm_token_type_ids, pixels
    prompt_text(processor, question, extra=None)       -> the chat-formatted text alone

Image(s), question, format instruction, then `extra`: the hint block, which the tutor reads and
the student does not (tutor.py builds it). Everything else about the two prompts is the same,
pixels included. Only the processor is used: no model, no torch import here.
Left out on purpose: video inputs and multi-turn chats (one user turn with its images).
"""
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
