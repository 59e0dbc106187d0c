"""Run by tests/test_distributed.py under torchrun: FSDP2 sampling with ranks stopping at
different lengths, then the same rows sampled by one unsharded process, tokens saved."""
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import rollout  # noqa: E402
import train  # noqa: E402
from distributed import setup  # noqa: E402

model_dir, data_path, out = sys.argv[1:4]
rank, world, device = setup()
examples = data.load_jsonl(data_path, report=lambda s: None)[:4]
model, processor = rollout.load_model(model_dir, "float32", "cpu")
model = train.shard(model, torch.float32)
mine = examples[rank * 2:(rank + 1) * 2]
prompts = [rollout.encode(processor, ex["question"], rollout.open_images(ex)) for ex in mine]
max_new = 4 if rank == 0 else 12                       # rank 0 stops long before rank 1
# FSDP2 initialises lazily in the root's first forward: one forward before generate()
one = torch.ones(1, 1, dtype=torch.long)
with torch.no_grad():
    getattr(model, rollout.SCORER)(rollout.collate(prompts[:1], 0, one, one.bool()), one, one.bool())
ids, mask = rollout.sample(model, processor, prompts, 3, max_new, seed=5, prompt_ids=[rank * 2, rank * 2 + 1])
# the same rows in one process, without FSDP
plain, _ = rollout.load_model(model_dir, "float32", "cpu")
ref_ids, ref_mask = rollout.sample(plain, processor, prompts, 3, max_new, seed=5, prompt_ids=[rank * 2, rank * 2 + 1])
torch.save({"ids": ids, "mask": mask, "ref_ids": ref_ids, "ref_mask": ref_mask}, f"{out}.rank{rank}")
dist.barrier()
dist.destroy_process_group()
