"""The seed-000 notebook program, with its two functions imported from rnn_xp.columns."""

import numpy as np

from rnn_xp.columns import rnn_forward, rnn_step_forward  # noqa: F401  (the notebook's two functions)

np.random.seed(0)

# Define dimensions
input_dim = 3
hidden_dim = 2
seq_length = 4

# Initialize parameters (normally these would be learned)
Wx = np.random.randn(hidden_dim, input_dim) * 0.01  # Input weights
Wh = np.random.randn(hidden_dim, hidden_dim) * 0.01  # Hidden weights
b = np.zeros((hidden_dim, 1))  # Bias

# Initial hidden state (typically zeros)
h0 = np.zeros((hidden_dim, 1))

# Create a random input sequence (4 timesteps, each with 3 features)
x_seq = [np.random.randn(input_dim, 1) for _ in range(seq_length)]

# Forward pass through the RNN
hidden_states = rnn_forward(x_seq, h0, Wx, Wh, b)

# Print the hidden states at each timestep
for t, h in enumerate(hidden_states):
    print(f"Timestep {t} hidden state:\n{h.squeeze()}")
