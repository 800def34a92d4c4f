"""NumPy (and CuPy) reference implementations of SimpleRNN, LSTM and GRU: the ground truth for every kernel.

Plain per-step loops written for clarity; the input projection of all steps is one matmul. Arrays
may be NumPy or CuPy (all computation uses the array module of x, results come back in the same
module) and float32 or float64 (results have x's dtype; weights, biases, states and gradients must
share it, otherwise TypeError).

Functions (fastrnn.ops has the same signatures)::

    y, h_n, cache        = rnn_forward(x, w_ih, w_hh, b, h0=None, lengths=None, mask=None, reverse=False,
                                       batch_first=True, training=True, nonlinearity="tanh",
                                       *, activation=None)  # activation=: nonlinearity's other name
    y, (h_n, c_n), cache = lstm_forward(x, w_ih, w_hh, b, h0=None, c0=None, lengths=None, mask=None,
                                        reverse=False, batch_first=True, training=True)
    y, h_n, cache        = gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, mask=None,
                                       reverse=False, batch_first=True, training=True)
    grads = rnn_backward(cache, dy, dstate=None, bptt_steps=None)   # x, h0, w_ih, w_hh, b
    grads = lstm_backward(cache, dy, dstate=None, bptt_steps=None)  # x, h0, c0, w_ih, w_hh, b
    grads = gru_backward(cache, dy, dstate=None, bptt_steps=None)   # x, h0, w_ih, w_hh, b_ih, b_hh

Conventions
-----------
Shapes: T steps, B batch, I input features, H hidden units, G gates (SimpleRNN 1, GRU 3, LSTM 4;
fastrnn._cells describes each cell).

- x is [B, T, I] if batch_first (the default) else [T, B, I]; y has the same layout with H features.
- Weights in PyTorch layouts: w_ih [G*H, I], w_hh [G*H, H].
- SimpleRNN: h' = act(x W_ih^T + h W_hh^T + b), b [H], act = tanh or relu (activation=, or its
  older name nonlinearity=).
- LSTM: gate order i, f, g, o; ONE bias b [4H] (= torch b_ih + b_hh). z = x W_ih^T + h W_hh^T + b;
  i = σ(z_i), f = σ(z_f), g = tanh(z_g), o = σ(z_o); c' = f*c + i*g; h' = o*tanh(c').
- GRU: gate order r, z, n; two biases b_ih [3H], b_hh [3H] (torch / cuDNN / Keras reset_after=True):
  a = x W_ih^T + b_ih, u = h W_hh^T + b_hh; r = σ(a_r + u_r), z = σ(a_z + u_z), n = tanh(a_n + r*u_n),
  h' = (1-z)*n + z*h.
- h0 / c0 None means zeros; the gradient for them is still returned.
- Masking: lengths (int [B], 0 <= len <= T; row b valid at t < len[b]) or mask (bool or 0/1 [B, T]
  in both layouts, Keras convention, any pattern); not both. At a step where the row is masked its
  state is carried unchanged and its output y[t, b] is 0.
- reverse=False processes t = 0..T-1, reverse=True t = T-1..0 (for right-padded masks: each sequence
  from its own last valid step, as Bidirectional needs). y[t] is always the state after processing
  time t (0 if masked). Processing step s is the s-th step in processing order (t = s, or T-1-s).
- h_n (and c_n) is the state after the last processed valid step of each row (h0 / c0 if none).
- Recurrent dropout: every forward takes ``recurrent_mask=`` (keyword only; [B, H] of x's dtype, or
  None): the recurrent product reads h * recurrent_mask at every step (z = x W_ih^T +
  (h * m) W_hh^T + b; GRU: u = (h * m) W_hh^T + b_hh, while h' = (1-z)*n + z*h keeps the unmasked h,
  as Keras does), and backward sends (dz W_hh) * m back into dh and uses h_prev * m for dW_hh. The
  layers draw m from fastrnn.reference.dropout's Philox masks (variational: one mask per call).
- Backward: dy has y's shape or is None (zeros); dy at masked positions is ignored. dstate is the
  gradient for the final state: [B, H] or None for rnn/gru, None or (dh_n, dc_n) for lstm (either
  may be None). A cache is a dict (a ReferenceCache: also the fields of fastrnn._cache.Cache as
  attributes, and its own backward); forward with training=False returns cache None and backward
  then raises ValueError.
- Truncated BPTT: bptt_steps=k (None, or k >= T, means full BPTT). Processing steps are split into
  chunks [0,k), [k,2k), ...; the gradient carried through the recurrent state (dh, and dc for LSTM)
  is zeroed when it crosses from processing step s back to s-1 where s is a positive multiple of k.
  This equals training the chunks one after another with the state carried forward but detached
  at chunk boundaries. dh0 / dc0 receive only what flows back within the first chunk.

Bad input raises ValueError (shapes, values, options) or TypeError (dtypes, array kinds) naming the
argument, the expected and the received value (see fastrnn.reference._common.check_forward_args).
Zero-size dimensions (T, B, I or H = 0) are refused.

NaN and Inf
-----------
Values are not checked: NaN and Inf in x, weights, biases, states or dy propagate through the
arithmetic like any other value (e.g. a NaN in a weight row makes every output that depends on it
NaN, in the forward and the backward pass). One exception by design: the values of x and dy at
masked steps are never read (masked steps select, they do not multiply), so padding may hold
anything, NaN included, without affecting results or gradients.

Cache keys
----------
All cells: cell ('rnn' | 'lstm' | 'gru'), T, B, I, H, dtype, xp (array module), reverse,
batch_first, mask (bool [T, B] time-major or None), x (time-major [T, B, I], masked steps zeroed),
the weights (w_ih, w_hh, and b or b_ih/b_hh), h_prev ([T, B, H], the state before processing time t).
rnn adds nonlinearity and act ([T, B, H], the candidate state act(...) at time t); lstm adds
c_prev ([T, B, H]), gates ([T, B, 4H], activated i, f, g, o) and tanh_c ([T, B, H], tanh of the
candidate c'); gru adds gates ([T, B, 3H], activated r, z, n) and u_n ([T, B, H], h W_hn^T + b_hn).
Every cache also has recurrent_mask ([B, H] or None).
The cache keeps references to x and the weights; do not modify them in place between forward and
backward (the kernel ops, fastrnn.ops, keep private copies).
"""
from __future__ import annotations

from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward

__all__ = [
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "rnn_backward",
    "rnn_forward",
]
