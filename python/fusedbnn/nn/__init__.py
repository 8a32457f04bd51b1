"""Keras 3 Bayesian layers over the fused ops, with illia's API."""

from fusedbnn.nn.base import BayesianModule
from fusedbnn.nn.conv import Conv1d, Conv2d
from fusedbnn.nn.embedding import Embedding
from fusedbnn.nn.linear import Linear
from fusedbnn.nn.lstm import LSTM, SequenceLSTM

__all__ = ["BayesianModule", "Conv1d", "Conv2d", "Embedding", "LSTM", "Linear", "SequenceLSTM"]
