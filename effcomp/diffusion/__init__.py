"""Diffusion: noise schedules, training objectives, samplers and guidance as pure functions.

  schedules.py         Schedule (β, ᾱ, posterior arrays), DiT's linear/cosine betas, respacing
  parameterization.py  q(x_t | x_0), the posterior, eps / x0 / v, p(x_{t-1} | x_t) incl. learned Σ
  likelihood.py        Gaussian KL, discretized Gaussian log-likelihood (the VLB's pieces)
  flow.py              rectified flow: x_t = (1 − t)·x_0 + t·ε, velocity ε − x_0, time sampling
  objectives.py        training_loss(rng, model_fn, x0, schedule, objective, learn_sigma)
  samplers.py          sample(rng, model_fn, shape, schedule, sampler, steps): DDPM, DDIM(η),
                       DDIM inversion, Euler / Heun
  guidance.py          classifier-free guidance (DiT's doubled batch), label dropout
  resshift.py          residual shifting (ResShift, DiT-SR): x_t = x_0 + η_t(y − x_0) + κ√η_t·ε,
                       its η schedule, loss and few-step sampler (restoration from y)

Layout everywhere: x [batch, ..., channels] (channels last), t int32 [batch] (diffusion)
or float32 [batch] in [0, 1] (flow); `model_fn(x_t, t) -> output`.
"""
