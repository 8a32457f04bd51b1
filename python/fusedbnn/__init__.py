"""fusedbnn: fused C++/CUDA TensorFlow ops for Bayesian neural-network layers, with Keras 3 layers.

>>> import fusedbnn
>>> layer = fusedbnn.nn.Linear(16, 4)
"""

from fusedbnn import distributions, nn, ops, reference
from fusedbnn.distributions import GaussianDistribution

__version__ = "0.1.0"

__all__ = ["GaussianDistribution", "distributions", "nn", "ops", "reference"]
