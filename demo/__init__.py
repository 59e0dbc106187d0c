"""
demo/: the embedded demo, a user of the method like any user's code: toy.py (the synthetic visual
task, the two-phase warm start with its planted misreadings), diagnostics.py (the diagnostics and
the regime check) and tiny_model.py (the ~1M-parameter Qwen-VL built in code). Its data and model
live in toy/ at the top (toy/data, toy/model). Nothing in the method imports it, except the calls
train.py and eval.py make for their default, --model toy (`from demo import toy; toy.ensure()`),
and eval.py --diagnose (`from demo import diagnostics`), made there.

    python demo/toy.py --threads 1            # rebuild toy/: data + tiny model + warm start
"""
