"""Shared fixtures: a random-weight tiny Qwen-VL and a few demo examples, built once per session."""
import os
import sys

import pytest

# the top-level modules (and demo/), importable from tests/ without installing the project
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import rollout  # noqa: E402
from demo import toy  # noqa: E402


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("toy_data"))
    train, evals, _, _ = toy.build_data(d, n_train=64, n_eval=16, seed=123, n_warm=4)
    return d, train, evals


@pytest.fixture(scope="session", params=["qwen3"])
def tiny(request, tmp_path_factory):
    d = str(tmp_path_factory.mktemp(f"tiny_{request.param}"))
    toy.build_model(d, request.param, seed=0)
    model, processor = rollout.load_model(d, dtype="float32", device="cpu")
    return model, processor, d


@pytest.fixture(scope="session")
def tiny25(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tiny_qwen25"))
    toy.build_model(d, "qwen2.5", seed=0)
    model, processor = rollout.load_model(d, dtype="float32", device="cpu")
    return model, processor, d


@pytest.fixture(scope="session")
def examples(toy_data):
    return data.load_jsonl(toy_data[1], report=lambda s: None)
