"""The seed-003 notebook program: the row loop is one call to rnn_xp.rnn_forward."""

import numpy as np

from rnn_xp import rnn_forward

np.random.seed(3)
timesteps = 42  # number of timesteps in the input sequence
input_features = 32  # dimensionality of the input feature space
output_features = 64  # dimensionality of the output feature space

inputs = np.random.random((timesteps, input_features))  # (42, 32)
state_t = np.zeros((output_features,))  # (64,)

W = np.random.random((output_features, input_features))  # (64, 32)
U = np.random.random((output_features, output_features))  # (64, 64)
b = np.random.random((output_features,))  # (64,)

# for input_t in inputs: output_t = tanh(W @ input_t + U @ state_t + b); state_t = output_t
final_output_sequence = rnn_forward(inputs, state_t, W, U, b)  # (42, 64)
print("final_output_sequence", final_output_sequence.shape)
print(final_output_sequence)
