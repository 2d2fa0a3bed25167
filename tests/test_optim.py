"""Learning-rate schedules from `config.optimizer`."""

import ml_collections
import numpy as np
import pytest

from effcomp import config as config_lib
from effcomp.train import optim


def _opt(**changes):
  c = ml_collections.ConfigDict(config_lib.base_config().optimizer.to_dict())
  c.update(changes)
  return c


def test_multistep_halves_at_each_milestone_counted_from_the_start():
  for warmup in (0, 10):
    s = optim.create_schedule(_opt(lr=2e-4, schedule="multistep", milestones=(100, 150),
                                   gamma=0.5, warmup_steps=warmup), total_steps=200)
    got = [float(s(t)) for t in (99, 100, 149, 150, 199)]
    np.testing.assert_allclose(got, [2e-4, 1e-4, 1e-4, 5e-5, 5e-5], rtol=1e-6)
  warm = optim.create_schedule(_opt(lr=2e-4, schedule="multistep", milestones=(100,),
                                    warmup_steps=10), total_steps=200)
  assert float(warm(5)) == pytest.approx(1e-4)


def test_cosine_and_bad_multistep_milestones():
  s = optim.create_schedule(_opt(lr=1.0, schedule="cosine"), total_steps=100)
  assert float(s(0)) == 1.0 and float(s(50)) == pytest.approx(0.5) and float(s(100)) < 1e-6
  for milestones in ((), (150, 100), (5,)):
    with pytest.raises(ValueError, match="milestones"):
      optim.create_schedule(_opt(schedule="multistep", milestones=milestones, warmup_steps=10),
                            total_steps=200)
