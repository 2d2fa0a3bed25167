"""Reinforcement learning for generative models, as pure functions.

  flow_grpo.py  Flow-GRPO: the marginal-preserving SDE sampler of a flow-matching model with
                per-step Gaussian log-probs, group-relative advantages, the clipped policy
                loss and the KL to a reference policy
  rewards.py    simple rewards registered in `effcomp.registry.REWARDS` (model-based ones,
                e.g. a classifier run, are registered by `effcomp.runs.rewards`)
"""
