"""LSTM reference, gate order i, f, g, o and one bias b [4H] (= torch b_ih + b_hh).

z = x W_ih^T + h W_hh^T + b; i = σ(z_i), f = σ(z_f), g = tanh(z_g), o = σ(z_o);
c' = f*c + i*g; h' = o*tanh(c').
"""
from __future__ import annotations

from collections.abc import Sequence

from ._common import (
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
    select,
    sigmoid,
    step_times,
    step_valid,
    to_time_major,
)


def lstm_forward(x: FloatArray, w_ih: FloatArray, w_hh: FloatArray, b: FloatArray,
                 h0: FloatArray | None = None, c0: FloatArray | None = None, lengths: Steps = None,
                 mask: Steps = None, reverse: bool = False, batch_first: bool = True, training: bool = True,
                 *, recurrent_mask: FloatArray | None = None
                 ) -> tuple[FloatArray, tuple[FloatArray, FloatArray], ReferenceCache | None]:
    """LSTM forward pass.

    x: [B, T, I] if batch_first else [T, B, I]; w_ih [4H, I]; w_hh [4H, H]; b [4H]; h0, c0 [B, H] or
    None (zeros). lengths (int [B]) or mask (bool [B, T]) select the valid steps; reverse processes
    t = T-1..0. Returns (y, (h_n, c_n), cache): y in x's layout with H features (0 at masked steps),
    h_n/c_n [B, H] the state after the last processed valid step, cache a dict for lstm_backward
    (None when training is False). recurrent_mask (keyword, [B, H] or None): recurrent dropout, the recurrent
    product reads h * recurrent_mask at every step (kept in the cache for backward).
    """
    spec = check_forward_args("lstm", x, w_ih, w_hh, (b,), h0=h0, c0=c0, lengths=lengths, mask=mask,
                              batch_first=batch_first, reverse=reverse, training=training,
                              recurrent_mask=recurrent_mask)
    xp, T, B, H, dtype = spec.xp, spec.T, spec.B, spec.H, spec.dtype
    reverse, batch_first = bool(reverse), bool(batch_first)

    x_tm = masked_input(spec, to_time_major(x, batch_first))       # [T, B, I]
    xw = input_projection(x_tm, w_ih, b)                            # [T, B, 4H]
    h = xp.zeros((B, H), dtype=dtype) if h0 is None else h0         # [B, H]
    c = xp.zeros((B, H), dtype=dtype) if c0 is None else c0         # [B, H]
    y = xp.zeros((T, B, H), dtype=dtype)
    h_prev = xp.empty((T, B, H), dtype=dtype)     # states before processing time t
    c_prev = xp.empty((T, B, H), dtype=dtype)
    gates = xp.empty((T, B, 4 * H), dtype=dtype)  # activated i, f, g, o at time t
    tanh_c = xp.empty((T, B, H), dtype=dtype)     # tanh(c') of the candidate cell state

    for t in step_times(T, reverse):
        valid = step_valid(spec.mask, t)
        z = xw[t] + recurrent_input(h, recurrent_mask) @ w_hh.T
        i = sigmoid(xp, z[:, 0 * H:1 * H])
        f = sigmoid(xp, z[:, 1 * H:2 * H])
        g = xp.tanh(z[:, 2 * H:3 * H])
        o = sigmoid(xp, z[:, 3 * H:4 * H])
        c_new = f * c + i * g
        tc = xp.tanh(c_new)
        h_new = o * tc
        h_prev[t], c_prev[t], tanh_c[t] = h, c, tc
        gates[t] = xp.concatenate([i, f, g, o], axis=1)
        h = select(xp, valid, h_new, h)
        c = select(xp, valid, c_new, c)
        y[t] = select(xp, valid, h, 0)

    cache = None
    if training:
        cache = base_cache("lstm", spec, x_tm, {"w_ih": w_ih, "w_hh": w_hh, "b": b}, reverse, batch_first,
                           h_prev=h_prev, c_prev=c_prev, gates=gates, tanh_c=tanh_c, recurrent_mask=recurrent_mask)
    return from_time_major(y, batch_first), (h, c), cache


@register_backward("lstm")
def lstm_backward(cache: ReferenceCache, dy: FloatArray | None,
                  dstate: Sequence[FloatArray | None] | None = None, bptt_steps: int | None = None) -> Grads:
    """Gradients of an LSTM forward pass.

    dy: y's shape (or None: zeros; ignored at masked steps); dstate: None or (dh_n, dc_n), either
    may be None; bptt_steps: truncation length k (None: full BPTT; both dh and dc are cut).
    Returns a dict with keys x, h0, c0, w_ih, w_hh, b.
    """
    dy, dh, dc, k = check_backward_args("lstm", cache, dy, dstate, bptt_steps)
    xp, T, B, I, H = cache["xp"], cache["T"], cache["B"], cache["I"], cache["H"]
    w_ih, w_hh, mask = cache["w_ih"], cache["w_hh"], cache["mask"]
    h_prev, c_prev, gates, tanh_c = cache["h_prev"], cache["c_prev"], cache["gates"], cache["tanh_c"]
    rmask = cache.get("recurrent_mask")
    dz_all = xp.zeros((T, B, 4 * H), dtype=cache["dtype"])   # gradient of z (pre-activations)

    times = step_times(T, cache["reverse"])
    for s in range(T - 1, -1, -1):
        t = times[s]
        valid = step_valid(mask, t)
        gh = dh + select(xp, valid, dy[t], 0)      # d loss / d h after time t
        gc = dc                                    # d loss / d c after time t
        i, f, g, o = (gates[t][:, n * H:(n + 1) * H] for n in range(4))
        tc = tanh_c[t]
        dc_new = gc + gh * o * (1 - tc * tc)       # through h' = o*tanh(c') and the carried c'
        di = dc_new * g
        df = dc_new * c_prev[t]
        dg = dc_new * i
        do = gh * tc
        dz = xp.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1)
        dz = select(xp, valid, dz, 0)              # only valid rows went through the cell
        dz_all[t] = dz
        dh = recurrent_grad(dz, w_hh, rmask) + select(xp, valid, 0, gh)  # masked rows carry the gradients unchanged
        dc = select(xp, valid, dc_new * f, gc)
        if cuts_gradient(s, k):
            dh, dc = xp.zeros_like(dh), xp.zeros_like(dc)

    dz_flat = dz_all.reshape(T * B, 4 * H)
    return {
        "x": from_time_major((dz_flat @ w_ih).reshape(T, B, I), cache["batch_first"]),
        "h0": dh,
        "c0": dc,
        "w_ih": dz_flat.T @ cache["x"].reshape(T * B, I),
        "w_hh": dz_flat.T @ recurrent_input(h_prev, rmask).reshape(T * B, H),
        "b": dz_flat.sum(axis=0),
    }
