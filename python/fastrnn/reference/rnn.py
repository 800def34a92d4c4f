"""SimpleRNN (Elman) reference: h' = act(x W_ih^T + h W_hh^T + b), act = tanh or relu."""
from __future__ import annotations

from ._common import (
    DEFAULT_ACTIVATION,
    FloatArray,
    Grads,
    ReferenceCache,
    Steps,
    base_cache,
    check_backward_args,
    check_forward_args,
    cuts_gradient,
    from_time_major,
    input_projection,
    masked_input,
    recurrent_grad,
    recurrent_input,
    register_backward,
    resolve_activation,
    select,
    step_times,
    step_valid,
    to_time_major,
)


def rnn_forward(x: FloatArray, w_ih: FloatArray, w_hh: FloatArray, b: FloatArray, h0: FloatArray | None = None,
                lengths: Steps = None, mask: Steps = None, reverse: bool = False, batch_first: bool = True,
                training: bool = True, nonlinearity: str = DEFAULT_ACTIVATION, *,
                activation: str | None = None, recurrent_mask: FloatArray | None = None
                ) -> tuple[FloatArray, FloatArray, ReferenceCache | None]:
    """SimpleRNN forward pass.

    x: [B, T, I] if batch_first else [T, B, I]; w_ih [H, I]; w_hh [H, H]; b [H]; h0 [B, H] or None
    (zeros). lengths (int [B]) or mask (bool [B, T]) select the valid steps; reverse processes
    t = T-1..0. activation: 'tanh' (default) or 'relu'; nonlinearity is another name for it (the
    older one; ValueError when both are given and differ). Returns (y, h_n, cache): y in x's layout
    with H features (0 at masked steps), h_n [B, H] the state after the last processed valid step,
    cache a dict (a ReferenceCache) for rnn_backward (None when training is False).
    recurrent_mask (keyword, [B, H] or None): recurrent dropout, the recurrent product reads
    h * recurrent_mask at every step (kept in the cache for backward).
    """
    nonlinearity = resolve_activation("rnn_forward", activation, nonlinearity)
    spec = check_forward_args("rnn", x, w_ih, w_hh, (b,), h0=h0, lengths=lengths, mask=mask,
                              batch_first=batch_first, reverse=reverse, training=training,
                              nonlinearity=nonlinearity, recurrent_mask=recurrent_mask)
    xp, T, B, H, dtype = spec.xp, spec.T, spec.B, spec.H, spec.dtype
    reverse, batch_first = bool(reverse), bool(batch_first)
    act = xp.tanh if nonlinearity == "tanh" else (lambda v: xp.maximum(v, 0))

    x_tm = masked_input(spec, to_time_major(x, batch_first))       # [T, B, I]
    xw = input_projection(x_tm, w_ih, b)                            # [T, B, H]
    h = xp.zeros((B, H), dtype=dtype) if h0 is None else h0         # [B, H]
    y = xp.zeros((T, B, H), dtype=dtype)
    h_prev = xp.empty((T, B, H), dtype=dtype)   # state before processing time t
    a_all = xp.empty((T, B, H), dtype=dtype)    # act(...) at time t (the candidate state)

    for t in step_times(T, reverse):
        valid = step_valid(spec.mask, t)
        a = act(xw[t] + recurrent_input(h, recurrent_mask) @ w_hh.T)
        h_prev[t] = h
        a_all[t] = a
        h = select(xp, valid, a, h)
        y[t] = select(xp, valid, h, 0)

    cache = None
    if training:
        cache = base_cache("rnn", spec, x_tm, {"w_ih": w_ih, "w_hh": w_hh, "b": b}, reverse, batch_first,
                           nonlinearity=nonlinearity, h_prev=h_prev, act=a_all, recurrent_mask=recurrent_mask)
    return from_time_major(y, batch_first), h, cache


@register_backward("rnn")
def rnn_backward(cache: ReferenceCache, dy: FloatArray | None, dstate: FloatArray | None = None,
                 bptt_steps: int | None = None) -> Grads:
    """Gradients of a SimpleRNN forward pass.

    dy: y's shape (or None: zeros; ignored at masked steps); dstate: gradient for h_n, [B, H] or
    None; bptt_steps: truncation length k (None: full BPTT). Returns a dict with keys x, h0, w_ih,
    w_hh, b (arrays shaped like the forward arguments; h0's even when h0 was None).
    """
    dy, dh, _, k = check_backward_args("rnn", cache, dy, dstate, bptt_steps)
    xp, T, B, I, H = cache["xp"], cache["T"], cache["B"], cache["I"], cache["H"]
    w_ih, w_hh, mask = cache["w_ih"], cache["w_hh"], cache["mask"]
    h_prev, a_all = cache["h_prev"], cache["act"]
    rmask = cache.get("recurrent_mask")
    relu = cache["nonlinearity"] == "relu"
    dz_all = xp.zeros((T, B, H), dtype=cache["dtype"])   # gradient of the pre-activation

    times = step_times(T, cache["reverse"])
    for s in range(T - 1, -1, -1):
        t = times[s]
        valid = step_valid(mask, t)
        g = dh + select(xp, valid, dy[t], 0)       # d loss / d (state after time t)
        a = a_all[t]
        dz = g * (a > 0) if relu else g * (1 - a * a)
        dz = select(xp, valid, dz, 0)              # only valid rows went through the cell
        dz_all[t] = dz
        dh = recurrent_grad(dz, w_hh, rmask) + select(xp, valid, 0, g)   # masked rows carry the gradient unchanged
        if cuts_gradient(s, k):
            dh = xp.zeros_like(dh)

    dz_flat = dz_all.reshape(T * B, H)
    return {
        "x": from_time_major((dz_flat @ w_ih).reshape(T, B, I), cache["batch_first"]),
        "h0": dh,
        "w_ih": dz_flat.T @ cache["x"].reshape(T * B, I),
        "w_hh": dz_flat.T @ recurrent_input(h_prev, rmask).reshape(T * B, H),
        "b": dz_flat.sum(axis=0),
    }
