"""GRU reference, gate order r, z, n, linear-before-reset (torch / cuDNN / Keras reset_after=True).

a = x W_ih^T + b_ih, u = h W_hh^T + b_hh; r = σ(a_r + u_r), z = σ(a_z + u_z),
n = tanh(a_n + r*u_n), h' = (1-z)*n + z*h.
"""
from __future__ import annotations

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


def gru_forward(x: FloatArray, w_ih: FloatArray, w_hh: FloatArray, b_ih: FloatArray, b_hh: FloatArray,
                h0: FloatArray | None = None, lengths: Steps = None, mask: Steps = None, reverse: bool = False,
                batch_first: bool = True, training: bool = True, *, recurrent_mask: FloatArray | None = None
                ) -> tuple[FloatArray, FloatArray, ReferenceCache | None]:
    """GRU forward pass.

    x: [B, T, I] if batch_first else [T, B, I]; w_ih [3H, I]; w_hh [3H, H]; b_ih, b_hh [3H]; h0 [B, H]
    or None (zeros). lengths (int [B]) or mask (bool [B, T]) select the valid steps; reverse
    processes t = T-1..0. Returns (y, h_n, cache): y in x's layout with H features (0 at masked
    steps), h_n [B, H] the state after the last processed valid step, cache a dict for gru_backward
    (None when training is False). recurrent_mask (keyword, [B, H] or None): recurrent dropout, the recurrent
    product reads h * recurrent_mask at every step (kept in the cache for backward). The update
    h' = (1-z)*n + z*h uses the unmasked h (Keras's GRU does the same).
    """
    spec = check_forward_args("gru", x, w_ih, w_hh, (b_ih, b_hh), h0=h0, lengths=lengths, mask=mask,
                              batch_first=batch_first, reverse=reverse, training=training,
                              recurrent_mask=recurrent_mask)
    xp, T, B, H, dtype = spec.xp, spec.T, spec.B, spec.H, spec.dtype
    reverse, batch_first = bool(reverse), bool(batch_first)

    x_tm = masked_input(spec, to_time_major(x, batch_first))       # [T, B, I]
    xa = input_projection(x_tm, w_ih, b_ih)                         # a for all steps: [T, B, 3H]
    h = xp.zeros((B, H), dtype=dtype) if h0 is None else h0         # [B, H]
    y = xp.zeros((T, B, H), dtype=dtype)
    h_prev = xp.empty((T, B, H), dtype=dtype)     # state before processing time t
    gates = xp.empty((T, B, 3 * H), dtype=dtype)  # activated r, z, n at time t
    u_n = xp.empty((T, B, H), dtype=dtype)        # h W_hn^T + b_hn at time t (needed for dr)

    for t in step_times(T, reverse):
        valid = step_valid(spec.mask, t)
        a = xa[t]
        u = recurrent_input(h, recurrent_mask) @ w_hh.T + b_hh
        r = sigmoid(xp, a[:, 0 * H:1 * H] + u[:, 0 * H:1 * H])
        z = sigmoid(xp, a[:, 1 * H:2 * H] + u[:, 1 * H:2 * H])
        n = xp.tanh(a[:, 2 * H:3 * H] + r * u[:, 2 * H:3 * H])
        h_new = (1 - z) * n + z * h
        h_prev[t], u_n[t] = h, u[:, 2 * H:3 * H]
        gates[t] = xp.concatenate([r, z, n], axis=1)
        h = select(xp, valid, h_new, h)
        y[t] = select(xp, valid, h, 0)

    cache = None
    if training:
        cache = base_cache("gru", spec, x_tm, {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh},
                           reverse, batch_first, h_prev=h_prev, gates=gates, u_n=u_n, recurrent_mask=recurrent_mask)
    return from_time_major(y, batch_first), h, cache


@register_backward("gru")
def gru_backward(cache: ReferenceCache, dy: FloatArray | None, dstate: FloatArray | None = None,
                 bptt_steps: int | None = None) -> Grads:
    """Gradients of a GRU forward pass.

    dy: y's shape (or None: zeros; ignored at masked steps); dstate: gradient for h_n, [B, H] or
    None; bptt_steps: truncation length k (None: full BPTT). Returns a dict with keys x, h0, w_ih,
    w_hh, b_ih, b_hh.
    """
    dy, dh, _, k = check_backward_args("gru", cache, dy, dstate, bptt_steps)
    xp, T, B, I, H = cache["xp"], cache["T"], cache["B"], cache["I"], cache["H"]
    w_ih, w_hh, mask = cache["w_ih"], cache["w_hh"], cache["mask"]
    h_prev, gates, u_n = cache["h_prev"], cache["gates"], cache["u_n"]
    rmask = cache.get("recurrent_mask")
    da_all = xp.zeros((T, B, 3 * H), dtype=cache["dtype"])   # gradient of a (input side)
    du_all = xp.zeros((T, B, 3 * H), dtype=cache["dtype"])   # gradient of u (recurrent side)

    times = step_times(T, cache["reverse"])
    for s in range(T - 1, -1, -1):
        t = times[s]
        valid = step_valid(mask, t)
        g = dh + select(xp, valid, dy[t], 0)       # d loss / d (state after time t)
        r, z, n = (gates[t][:, q * H:(q + 1) * H] for q in range(3))
        dn_pre = g * (1 - z) * (1 - n * n)
        dz_pre = g * (h_prev[t] - n) * z * (1 - z)
        dr_pre = dn_pre * u_n[t] * r * (1 - r)
        da = select(xp, valid, xp.concatenate([dr_pre, dz_pre, dn_pre], axis=1), 0)
        du = select(xp, valid, xp.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1), 0)
        da_all[t], du_all[t] = da, du
        dh = recurrent_grad(du, w_hh, rmask) + select(xp, valid, g * z, g)   # masked rows carry the gradient unchanged
        if cuts_gradient(s, k):
            dh = xp.zeros_like(dh)

    da_flat = da_all.reshape(T * B, 3 * H)
    du_flat = du_all.reshape(T * B, 3 * H)
    return {
        "x": from_time_major((da_flat @ w_ih).reshape(T, B, I), cache["batch_first"]),
        "h0": dh,
        "w_ih": da_flat.T @ cache["x"].reshape(T * B, I),
        "w_hh": du_flat.T @ recurrent_input(h_prev, rmask).reshape(T * B, H),
        "b_ih": da_flat.sum(axis=0),
        "b_hh": du_flat.sum(axis=0),
    }
