"""The plain PyTorch script a user would run instead of edgeseq: load, run one input file, save.

usage: python bench/torch_infer.py models.motion_lstm:build sample.npy out.npy [threads]
"""

import importlib
import sys

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
module, factory = sys.argv[1].split(":")
if len(sys.argv) > 4:
    torch.set_num_threads(int(sys.argv[4]))
model = getattr(importlib.import_module(module), factory)().eval()
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.inference_mode():
    y = model(x)
np.save(sys.argv[3], y.numpy())
