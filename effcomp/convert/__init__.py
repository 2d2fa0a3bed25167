"""Official checkpoints → effcomp variables, one file per source format.

Every converter is a name map from effcomp's variable paths to the official state dict's
keys and layouts (`state_dict.Layout`); `state_dict.from_state_dict` applies it with one
report (tensors not used, leaves not filled) and refuses shapes that disagree, and
`state_dict.to_state_dict` runs it backwards (round trips in the tests). Official code is
never imported; checkpoints are read with `torch.load(weights_only=True)` (torch is an
optional dependency, needed only for .pth files) or as safetensors / npz.
`effcomp.runs.convert` writes a converted model as a run; `experiments/convert.py` is its
command line.
"""
