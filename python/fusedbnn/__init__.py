"""fusedbnn: fused C++/CUDA TensorFlow ops for Bayesian neural-network layers, with Keras 3 layers.

>>> import fusedbnn
>>> layer = fusedbnn.nn.Linear(16, 4)
"""

from fusedbnn import distributions, losses, nn, ops, reference, uncertainty
from fusedbnn.convert import bayesianize
from fusedbnn.distributions import GaussianDistribution
from fusedbnn.models import BayesianModel

__version__ = "0.1.0"

__all__ = [
    "BayesianModel",
    "GaussianDistribution",
    "bayesianize",
    "distributions",
    "losses",
    "nn",
    "ops",
    "reference",
    "uncertainty",
]
