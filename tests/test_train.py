"""config.py without a model (defaults per model, the presets in --help, configuration only), and
eval.py's held-out evaluation during training (blank images, per category)."""
import os

import torch

import config
import eval as eval_py
import metrics


def test_a_real_model_gets_the_papers_settings_and_the_demo_its_own():
    real = config.get_args(["--model", "Qwen/Qwen3-VL-2B-Thinking", "--train_data", "x.jsonl"])
    for k, v in config.PAPER.items():
        assert getattr(real, k) == v, k
    assert real.ptd_coef == 0.05 and real.lr == 1e-6 and real.warmup_steps == 0
    demo = config.get_args([])
    for k, v in config.DEMO.items():
        assert getattr(demo, k) == v, k
    by_path = config.get_args(["--model", os.path.join(os.path.dirname(config.__file__), "toy", "model")])
    assert (by_path.lr, by_path.divergence) == (config.DEMO["lr"], config.DEMO["divergence"])   # by its path
    assert real.divergence == "jsd"
    given = config.get_args(["--model", "some/model", "--lr", "3e-6", "--ptd_coef", "0.5", "--steps", "7"])
    assert (given.lr, given.ptd_coef, given.steps, given.max_new_tokens) == (3e-6, 0.5, 7, 4096)


def test_the_hint_ablation_switches_parse_and_default_to_the_method():
    args = config.get_args([])
    assert args.hint_style == "structured" and not args.no_spoiler_filter
    args = config.get_args(["--hint_style", "text", "--no_spoiler_filter"])
    assert args.hint_style == "text" and args.no_spoiler_filter
    assert {"hint_style", "no_spoiler_filter"} <= set(config.RESUME_KEYS)


def test_help_shows_both_presets_values_and_config_is_only_configuration():
    text = config.argparse.ArgumentParser()
    for add in (config._algorithm, config._sampling_and_optimisation, config._system_and_logging):
        add(text)
    text = " ".join(text.format_help().split())
    for k in config.DEMO:
        assert f"(default: {config.PAPER[k]}, the paper's; --model toy: {config.DEMO[k]})" in text, k
    source = open(config.__file__).read()
    for name in ("checkpoint", "data", "toy", "distributed"):
        assert f"import {name}" not in source and f"from {name} " not in source


def test_the_blank_evaluation_shows_the_same_prompts_on_white_pictures(tiny, examples, monkeypatch):
    """eval.heldout(blank=True): the same questions, white images of the same sizes (the chance
    line), keys eval_blank_pass1[/category]; the plain evaluation also classes the demo's answers."""
    from PIL import Image
    import rollout
    model, processor, _ = tiny
    seen = {}

    def fake_counts(model, processor, prompts, exs, n, *a, **k):
        seen.setdefault("prompts", []).append(prompts)
        texts = [f"<answer>{ex['answer'] if i % 2 else 'nonsense'}</answer>" for ex in exs for i in range(n)]
        return {"correct": torch.full((len(exs),), n / 2), "length": torch.ones(len(exs)), "texts": texts}

    monkeypatch.setattr(eval_py, "pass_counts", fake_counts)
    monkeypatch.setattr(eval_py, "all_sum", lambda t: t)
    exs = examples[:6]
    args = config.get_args(["--eval_samples", "2"])
    plain = eval_py.heldout(model, processor, exs, args, 0, 1)
    blank = eval_py.heldout(model, processor, exs, args, 0, 1, blank=True)
    cats = sorted({ex["category"] for ex in exs})
    assert set(blank) == {"eval_blank_pass1"} | {f"eval_blank_pass1/{c}" for c in cats}
    assert blank["eval_blank_pass1"] == plain["eval_pass1"] == 0.5
    for c in cats:   # one answer in two is the target, the other names nothing the picture shows
        assert plain[f"eval_answers/{c}/target"] == 0.5 and plain[f"eval_answers/{c}/absent"] == 0.5
    white = rollout.encode(processor, exs[0]["question"],
                           [Image.new("RGB", rollout.open_images(exs[0])[0].size, "white")])
    p_plain, p_blank = seen["prompts"][0][0], seen["prompts"][1][0]
    assert torch.equal(p_blank["pixel_values"], white["pixel_values"])
    assert not torch.equal(p_plain["pixel_values"], p_blank["pixel_values"])
    assert torch.equal(p_plain["input_ids"], p_blank["input_ids"])
    text = metrics.eval_text({**plain, **blank}, 2)
    assert "blank image pass@1 0.500" in text and f"answers {'/'.join(metrics.ANSWER_CLASSES)}" in text


def test_by_category_means_each_category_and_counts_the_rest_as_all():
    exs = [{"category": "a"}, {"category": "a"}, {"category": "b"}, {"category": None}]
    assert eval_py.by_category([1, 0, 1, 0.5], exs) == {"a": 0.5, "all": 0.5, "b": 1.0}
