"""Causal language modelling on a text dataset, with optional knowledge distillation.

The text splits (`config.data`, e.g. python_docs train/validation) are tokenized with
`config.task.tokenizer` and packed into rows of `seq_len + 1` tokens
(`effcomp.data.packing`); a row trains next-token prediction on `row[:-1] → row[1:]`.
Padding targets are masked, so the validation loss averages every token of the split
exactly once and `perplexity = exp(loss)` is the split's token-level perplexity.

`config.task.tokenizer`:
  * 'bpe' — byte-level BPE with `tokenizer_vocab` entries, trained on the training split
    when the task is built (deterministic; a few seconds on python_docs);
  * 'byte' — bytes (vocabulary 259, no training);
  * a path to a tokenizer JSON written by `experiments/train_tokenizer.py`.
The tokenizer is written into the run's workdir as `tokenizer.json` (sampling reads it),
and a resumed or evaluated run checks it builds the same one.

Distillation (a frozen teacher from `config.teacher.workdir`, e.g. the full-precision
model a binarized student starts from):
  loss = ce_weight · CE + kd_weight · T² · KL(p_teacher^T ‖ p_student^T)
         + hidden_weight · mean over layers of ‖h_s/‖h_s‖ − h_t/‖h_t‖‖² per token
The logit term is Hinton et al. 2015; the hidden-state term, on ℓ2-normalized hidden
states after each block, is OneBit's (Xu et al. 2024, eq. 9) and needs teacher and
student of equal depth and width.

1-bit students (`config.model.binarizer`, `effcomp.quant.progressive`): the model gets
`progress = min(step / binarize_steps, 1)` (binarize_steps 0: train.steps), the position
in its binarization schedule. Evaluation reports the model as it computes at that step
(`loss`, `perplexity`, `accuracy`) and its final 1-bit version (`*_1bit`, progress=None);
they agree once the schedule reaches the sign. With `init_from_teacher`, a fresh run copies
the teacher's weights into the student (`binary_init.copy_weights`) and, for the
progressive binarizer with dual scaling, fits its input-channel scales by binary-aware
initialization (`binary_init_steps` Adam steps at `binary_init_lr` on `binary_init_rows`
training rows spread over the split; 0 steps skips it).
"""

import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics
from etils import epath

from effcomp.data import packing, tokenizer as tokenizer_lib
from effcomp.data.pipeline import read_batch
from effcomp.quant import binary_init
from effcomp.registry import MODEL_INPUTS, TASKS
from effcomp.tasks.base import Task, task_config

TOKENIZER_FILE = "tokenizer.json"


@flax.struct.dataclass
class Perplexity(clu_metrics.Average):
  """exp of the token-averaged negative log-likelihood."""

  def compute(self):
    return jnp.exp(super().compute())


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  perplexity: Perplexity.from_output("loss")
  accuracy: clu_metrics.Average.from_output("correct")


@flax.struct.dataclass
class BinaryEvalMetrics(clu_metrics.Collection):
  """EvalMetrics plus those of the final 1-bit weights (progress=None)."""
  loss: clu_metrics.Average.from_output("loss")
  perplexity: Perplexity.from_output("loss")
  accuracy: clu_metrics.Average.from_output("correct")
  loss_1bit: clu_metrics.Average.from_output("loss_1bit")
  perplexity_1bit: Perplexity.from_output("loss_1bit")
  accuracy_1bit: clu_metrics.Average.from_output("correct_1bit")


def task_defaults() -> ml_collections.ConfigDict:
  """Fields `config.task` may hold for this task (set them in the config file)."""
  return ml_collections.ConfigDict({
      "name": "lm", "tokenizer": "bpe", "tokenizer_vocab": 4096, "seq_len": 256,
      "ce_weight": 1.0, "kd_weight": 0.0, "kd_temperature": 1.0, "hidden_weight": 0.0,
      "binarize_steps": 0, "init_from_teacher": False, "binary_init_steps": 50,
      "binary_init_lr": 0.05, "binary_init_rows": 16})


def build_tokenizer(spec: str, vocab_size: int, train_source):
  """The tokenizer `spec` names (see the module docstring)."""
  if spec == "bpe":
    return tokenizer_lib.train_bpe(packing.read_texts(train_source), vocab_size)
  return tokenizer_lib.load(spec)


def token_kl(student_logits, teacher_logits, temperature: float):
  """T² · KL(softmax(teacher/T) ‖ softmax(student/T)) per token: [..., V] → [...]."""
  t = jax.nn.log_softmax(teacher_logits / temperature)
  s = jax.nn.log_softmax(student_logits / temperature)
  return temperature ** 2 * jnp.sum(jnp.exp(t) * (t - s), axis=-1)


def hidden_distance(student_hidden, teacher_hidden):
  """Mean over layers of ‖ĥ_s − ĥ_t‖² per token, ĥ = h / ‖h‖ (OneBit eq. 9): [B, T]."""
  def unit(h):
    h = h.astype(jnp.float32)
    return h / (jnp.linalg.norm(h, axis=-1, keepdims=True) + 1e-6)
  return jnp.mean(jnp.stack([jnp.sum((unit(s) - unit(t)) ** 2, axis=-1)
                             for s, t in zip(student_hidden, teacher_hidden)]), axis=0)


def masked_mean(values, weights):
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _check_teacher_tokenizer(config, tok) -> None:
  """A teacher's logits index its own vocabulary: refuse a student tokenizer that differs."""
  path = epath.Path(config.teacher.workdir or ".") / TOKENIZER_FILE
  if config.teacher.workdir and path.exists() and path.read_text() != tok.to_json():
    raise ValueError(f"config.task.tokenizer={config.task.tokenizer!r} builds a tokenizer that "
                     f"differs from the teacher's ({path}); use that file as the tokenizer")


@TASKS.register("lm")
def build(config: ml_collections.ConfigDict, model, train_source, eval_source,
          teacher_model=None) -> Task:
  """A language-modelling `Task` for `model` (tokens [B, T] → logits [B, T, V])."""
  c = task_config(config, task_defaults())
  if c.seq_len < 1:
    raise ValueError(f"config.task.seq_len={c.seq_len}: expected ≥ 1")
  if (c.kd_weight or c.hidden_weight) and teacher_model is None:
    raise ValueError("config.task.kd_weight/hidden_weight > 0 need a teacher: set "
                     "config.teacher.workdir")
  tok = build_tokenizer(c.tokenizer, c.tokenizer_vocab, train_source)
  if getattr(model, "vocab_size", tok.vocab_size) < tok.vocab_size:
    raise ValueError(f"config.model.vocab_size={model.vocab_size} is smaller than the "
                     f"tokenizer's vocabulary ({tok.vocab_size}, config.task.tokenizer="
                     f"{c.tokenizer!r})")
  _check_teacher_tokenizer(config, tok)
  if c.init_from_teacher and teacher_model is None:
    raise ValueError("config.task.init_from_teacher needs a teacher: set config.teacher.workdir "
                     "(its recorded model is the teacher)")
  pad_id = tok.pad_id
  train_rows, eval_rows = (packing.packed_source(s, tok, c.seq_len) for s in (train_source, eval_source))
  use_hidden = bool(c.hidden_weight)
  binarized = getattr(model, "binarize", None) is not None
  schedule_steps = c.binarize_steps or config.train.steps

  def progress(step):
    return jnp.minimum(step / schedule_steps, 1.0) if binarized else None

  def split(batch):
    tokens = batch["tokens"]
    return tokens[:, :-1], tokens[:, 1:], (tokens[:, 1:] != pad_id).astype(jnp.float32)

  def init_fn_for(module):
    return lambda rng, batch: module.init(rng, split(batch)[0])

  def forward(module, variables, inputs, **kwargs):
    """(logits, hidden states after each block or None)."""
    if not use_hidden:
      return module.apply(variables, inputs, **kwargs), None
    logits, inter = module.apply(variables, inputs, mutable=["intermediates"], **kwargs)
    return logits, inter["intermediates"]["hidden"]

  def student_kwargs(step):
    return {"progress": progress(step)} if binarized else {}

  def loss_fn(params, model_state, batch, rng, teacher_variables, step):
    del rng
    inputs, targets, weights = split(batch)
    logits, hidden = forward(model, {"params": params, **model_state}, inputs,
                             **student_kwargs(step))
    ce = masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets), weights)
    metrics = {"cross_entropy": ce,
               "accuracy": masked_mean(jnp.argmax(logits, -1) == targets, weights)}
    loss = c.ce_weight * ce
    if teacher_model is not None:
      t_logits, t_hidden = jax.lax.stop_gradient(forward(teacher_model, teacher_variables, inputs))
      if c.kd_weight:
        metrics["kd"] = masked_mean(token_kl(logits, t_logits, c.kd_temperature), weights)
        loss += c.kd_weight * metrics["kd"]
      if use_hidden:
        metrics["hidden"] = masked_mean(hidden_distance(hidden, t_hidden), weights)
        loss += c.hidden_weight * metrics["hidden"]
    return loss, (dict(model_state), metrics)

  def token_outputs(variables, inputs, targets, **kwargs):
    logits = model.apply(variables, inputs, **kwargs)
    return (optax.softmax_cross_entropy_with_integer_labels(logits, targets),
            (jnp.argmax(logits, -1) == targets).astype(jnp.float32))

  def eval_fn(params, model_state, batch, step, teacher_variables):
    del teacher_variables
    inputs, targets, weights = split(batch)
    variables = {"params": params, **model_state}
    mask = (weights > 0) & batch["mask"][:, None]
    loss, correct = token_outputs(variables, inputs, targets, **student_kwargs(step))
    if not binarized:
      return EvalMetrics.single_from_model_output(loss=loss, correct=correct, mask=mask)
    loss_1bit, correct_1bit = token_outputs(variables, inputs, targets)
    return BinaryEvalMetrics.single_from_model_output(
        loss=loss, correct=correct, loss_1bit=loss_1bit, correct_1bit=correct_1bit, mask=mask)

  def warm_start(params, teacher_variables):
    params = binary_init.copy_weights(params, teacher_variables["params"])
    spec = getattr(model, "binarize", None)
    if spec is None or not spec.has_scales or not c.binary_init_steps:
      return params, {}
    rows = np.linspace(0, len(train_rows) - 1, min(c.binary_init_rows, len(train_rows)))
    tokens = jnp.asarray(read_batch(train_rows, rows.astype(int))["tokens"][:, :-1])
    return binary_init.binary_aware_init(model, params, teacher_model, teacher_variables["params"],
                                         tokens, c.binary_init_steps, c.binary_init_lr)

  return Task(
      model=model, init_fn=init_fn_for(model), loss_fn=loss_fn, eval_fn=eval_fn,
      eval_metrics=BinaryEvalMetrics if binarized else EvalMetrics, train_source=train_rows,
      eval_source=eval_rows, summary_metric="perplexity",
      teacher_init_fn=init_fn_for(teacher_model) if teacher_model is not None else None,
      files={TOKENIZER_FILE: tok.to_json()},
      warm_start=warm_start if c.init_from_teacher else None)


@MODEL_INPUTS.register("lm")
def example_inputs(config: ml_collections.ConfigDict, model) -> tuple:
  """A batch of one 8-token sequence (the weights do not depend on its length)."""
  del config, model
  return (jnp.zeros((1, 8), jnp.int32),)


def load_tokenizer(workdir: str) -> tokenizer_lib.Tokenizer:
  """The tokenizer a run of this task wrote into its workdir (`TOKENIZER_FILE`)."""
  path = os.path.join(workdir, TOKENIZER_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--workdir={workdir!r}: no {TOKENIZER_FILE}; expected the workdir "
                            "of a run of the 'lm' task")
  return tokenizer_lib.load(path)
