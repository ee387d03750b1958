"""The blocked path of :func:`sliding_window_attention.sliding_window_attention`: any device, any dropout. Groups of
query blocks as batched matmuls; the probabilities are recomputed in the backward from the row log-sum-exp and
the counter-based dropout mask (:mod:`counter_dropout`) is regenerated there rather than stored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .counter_dropout import _apply_keep, dropout_keep
from .scores import _masked_score


# --------------------------------------------------------------------------------------------------------------------
# The blocked path: any device, any dropout; probabilities recomputed in the backward
# --------------------------------------------------------------------------------------------------------------------

# Elements of one block group's score matrix: large enough that the per-call overhead vanishes, small enough that the
# scores, the probabilities and the mask of one head stay in the L2 cache.
_GROUP_SCORES = 1 << 17


# exp() of arguments below about -87 (float32's smallest normal is e^-87.3) takes a slow path in PyTorch's CPU kernel:
# 100x the time of ordinary arguments, and every masked score (-1e30) is one. Arguments are clamped here first; a
# weight of e^-80 = 2e-35 instead of 0 changes no result at float32 or float64 precision (the dense twins agree to
# 1e-15).
_EXP_FLOOR = -80.0


class _BlockedAttention(torch.autograd.Function):
    """Banded attention (+ extra keys), with dropout, in blocks of ``b`` queries; the backward recomputes.

    Block ``j`` holds queries ``j*b .. j*b + b`` and attends the band keys ``j*b - left .. j*b + b + right`` (a
    strided, overlapping view of the padded keys: no copy; no band when ``k`` is None) plus the extra keys. A
    group of blocks of one head is a few batched matmuls; its scores, probabilities and dropout mask live only
    while the group is computed. Saved for the backward: the (padded) inputs, the output and the row
    log-sum-exp, so memory is ``O(T * D)`` per head whatever the window or the dropout. The backward recomputes
    each group's probabilities from the log-sum-exp and regenerates its dropout mask from the keys; with ``P``
    the probabilities, ``M`` the mask over ``1 - p``, ``g`` the output gradient and ``delta_i = g_i . out_i``:
    ``dV = (P M)^T g``, ``dS = P (M (g V^T) - delta)``, ``dQ = dS K``, ``dK = dS^T Q`` (as flash-attention's
    backward, with the mask in the two products that see it).

    float64 stays float64; other dtypes compute in float32 and return their own dtype.
    """

    @staticmethod
    def forward(ctx, q, k, v, extra_k, extra_v, key_mask, extra_bias, row_keys, col_keys, extra_col_keys,
                left, right, b, p):
        with torch.autocast(q.device.type, enabled=False):
            x = _Blocks(q, k, v, extra_k, extra_v, key_mask, extra_bias, row_keys, col_keys, extra_col_keys,
                        left, right, b, p)
            out, lse = _blocked_forward(x)
        ctx.save_for_backward(x.q, x.k, x.v, x.ek, x.ev, x.key_bias, x.extra_bias, x.rk, x.ck, x.eck, out, lse)
        ctx.blocks = x.sizes()
        ctx.dtypes = (q.dtype, None if k is None else k.dtype, None if extra_k is None else extra_k.dtype)
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        saved = ctx.saved_tensors  # once: checkpointing unpacks each saved tensor a single time
        x = _Blocks.from_saved(saved[:10], ctx.blocks)
        out, lse = saved[10:]
        with torch.autocast(grad_out.device.type, enabled=False):
            dq, dk, dv, dek, dev = _blocked_backward(x, grad_out, out, lse)
        q_dt, k_dt, e_dt = ctx.dtypes
        cast = lambda t, dt: None if t is None else t.to(dt)  # noqa: E731
        return (cast(dq, q_dt), cast(dk, k_dt), cast(dv, k_dt), cast(dek, e_dt), cast(dev, e_dt),
                None, None, None, None, None, None, None, None, None)


class _Blocks:
    """The padded, compute-dtype tensors of :class:`_BlockedAttention` and the views of one block group."""

    def __init__(self, q, k, v, ek, ev, key_mask, extra_bias, rk, ck, eck, left, right, b, p):
        B, H, T, D = q.shape
        cd = torch.float64 if q.dtype == torch.float64 else torch.float32
        nb = math.ceil(T / b)
        Tq = nb * b
        self.q = F.pad(q.to(cd), (0, 0, 0, Tq - T))  # (B, H, Tq, D)
        self.rk = None if p == 0 else F.pad(rk, (0, Tq - T))
        self.k = self.v = self.key_bias = self.ck = None
        if k is not None:
            tail = Tq - T + right
            self.k = F.pad(k.to(cd), (0, 0, left, tail))  # (B, H, left + Tq + right, D)
            self.v = F.pad(v.to(cd), (0, 0, left, tail))
            self.key_bias = torch.where(F.pad(key_mask, (left, tail), value=False), 0.0, _masked_score(cd)).to(cd)
            self.ck = None if p == 0 else F.pad(ck, (left, tail))
        self.ek = self.ev = self.eck = self.extra_bias = None
        if ek is not None:
            self.ek, self.ev, self.eck = ek.to(cd), ev.to(cd), eck
            if extra_bias is not None:
                self.extra_bias = F.pad(extra_bias.to(cd), (0, 0, 0, Tq - T))
        self._setup((T, left, right, b, p))

    @classmethod
    def from_saved(cls, saved, sizes):
        x = cls.__new__(cls)
        x.q, x.k, x.v, x.ek, x.ev, x.key_bias, x.extra_bias, x.rk, x.ck, x.eck = saved
        x._setup(sizes)
        return x

    def sizes(self):
        return (self.T, self.left, self.right, self.b, self.p)

    def _setup(self, sizes):
        self.T, self.left, self.right, self.b, self.p = sizes
        self.B, self.H, self.Tq, self.D = self.q.shape
        self.nb = self.Tq // self.b
        self.band = self.k is not None
        self.span = self.b + self.left + self.right
        self.G = 0 if self.ek is None else self.ek.shape[2]
        if self.band:
            t = torch.arange(self.b, device=self.q.device)[:, None]
            c = torch.arange(self.span, device=self.q.device)[None, :]
            allowed = (c >= t) & (c <= t + self.left + self.right)
            self.band_bias = torch.where(allowed, 0.0, _masked_score(self.q.dtype)).to(self.q.dtype)  # (b, span)
        width = (self.span if self.band else 0) + self.G
        self.group = max(1, _GROUP_SCORES // (self.b * max(width, 1)))  # blocks per group

    def groups(self):
        """``(head, j0, j1, bias)`` for every group of blocks: ``head`` holds one (batch row, head)'s views, made
        once per head (indexing costs more in dispatch than in arithmetic at this grain); ``bias`` ``(n, b, span)``
        is the band's shape plus the keys' padding, made once per batch row and shared by the heads."""
        spans = [(j0, min(self.nb, j0 + self.group)) for j0 in range(0, self.nb, self.group)]
        for i in range(self.B):
            biases = [None] * len(spans)
            if self.band:
                key_windows = self.key_bias[i].unfold(0, self.span, self.b)  # (nb + ..., span)
                biases = [self.band_bias + key_windows[j0:j1, None, :] for j0, j1 in spans]
            for h in range(self.H):
                head = _HeadViews(self, i, h)
                for (j0, j1), bias in zip(spans, biases):
                    yield head, j0, j1, bias

    def scores(self, head, j0, j1, bias):
        """Scores of one group: band ``(n, b, span)`` (or None) and extra ``(n*b, G)`` (or None)."""
        r0, r1 = j0 * self.b, j1 * self.b
        qg = head.q[r0:r1]  # (n*b, D)
        s = se = None
        if self.band:
            s = torch.baddbmm(bias, qg.view(j1 - j0, self.b, self.D), head.kT[j0:j1])
        if self.G:
            se = torch.mm(qg, head.ekT) if head.eb is None else torch.addmm(head.eb[r0:r1], qg, head.ekT)
        return s, se

    def keep(self, head, j0, j1):
        """Dropout masks of one group (:func:`dropout_keep`), shaped as :meth:`scores`; None without dropout."""
        if not self.p:
            return None, None
        rows = head.rk[j0 * self.b : j1 * self.b]
        m = me = None
        if self.band:
            m = dropout_keep(rows.view(j1 - j0, self.b, 1), head.ck[j0:j1, None, :], self.p)
        if self.G:
            me = dropout_keep(rows[:, None], head.eck, self.p)
        return m, me


class _HeadViews:
    """The views of one (batch row ``i``, head ``h``) that every group of :class:`_Blocks` slices."""

    def __init__(self, x: _Blocks, i: int, h: int):
        self.i, self.h = i, h
        self.q = x.q[i, h]  # (Tq, D)
        if x.band:
            self.kT = x.k[i, h].unfold(0, x.span, x.b)  # (nb + ..., D, span): window j is keys j*b .. j*b + span
            self.vT = x.v[i, h].unfold(0, x.span, x.b)
        if x.G:
            self.ek, self.ev = x.ek[i, h], x.ev[i, h]  # (G, D)
            self.ekT = self.ek.transpose(0, 1)
            self.eb = None if x.extra_bias is None else x.extra_bias[i, 0]  # (Tq, G)
        if x.p:
            self.rk = x.rk[i, h]
            self.ck = x.ck[i].unfold(0, x.span, x.b) if x.band else None  # (nb + ..., span)
            self.eck = x.eck[i][None, :] if x.G else None


def _blocked_forward(x: _Blocks) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, T, D, b = x.B, x.H, x.T, x.D, x.b
    out = x.q.new_empty(B, x.Tq, H, D).transpose(1, 2)  # (B, H, Tq, D) laid out as (B, Tq, H, D)
    lse = x.q.new_empty(B, H, x.Tq)
    scale = 1.0 / (1.0 - x.p)
    for head, j0, j1, bias in x.groups():
        n, r0, r1 = j1 - j0, j0 * b, j1 * b
        s, se = x.scores(head, j0, j1, bias)
        keep, keep_e = x.keep(head, j0, j1)
        m = s.amax(-1).view(-1) if s is not None else se.amax(-1)
        if s is not None and se is not None:
            m = torch.maximum(m, se.amax(-1))
        o = total = None
        if s is not None:
            s.sub_(m.view(n, b, 1)).clamp_min_(_EXP_FLOOR).exp_()
            total = s.sum(-1).view(-1)
            if keep is not None:
                _apply_keep(s, keep)
            o = torch.bmm(s, head.vT[j0:j1].transpose(1, 2)).view(n * b, D)
        if se is not None:
            se.sub_(m[:, None]).clamp_min_(_EXP_FLOOR).exp_()
            total = se.sum(-1) if total is None else total.add_(se.sum(-1))
            if keep_e is not None:
                _apply_keep(se, keep_e)
            o = torch.mm(se, head.ev) if o is None else o.addmm_(se, head.ev)
        torch.mul(o, (scale / total)[:, None], out=out[head.i, head.h, r0:r1])
        torch.add(m, total.log_(), out=lse[head.i, head.h, r0:r1])
    return out[:, :, :T], lse


def _blocked_backward(x: _Blocks, grad_out, out, lse):
    B, H, T, D, b, p = x.B, x.H, x.T, x.D, x.b, x.p
    pad = lambda t: F.pad(t.to(x.q.dtype), (0, 0, 0, x.Tq - T))  # noqa: E731  padding rows: zero gradient
    g_all = pad(grad_out)
    delta = (g_all * pad(out)).sum(-1)  # (B, H, Tq): g . out
    if p:
        g_all.mul_(1.0 / (1.0 - p))  # the kept probabilities' scale, folded into g
    dq = x.q.new_empty(B, x.Tq, H, D).transpose(1, 2)  # every row is written
    dk = dv = dek = dev = None
    if x.band:
        dk, dv = torch.zeros_like(x.k), torch.zeros_like(x.v)
    if x.G:
        dek, dev = torch.zeros_like(x.ek), torch.zeros_like(x.ev)
    for head, j0, j1, bias in x.groups():
        i, h = head.i, head.h
        n, r0, r1 = j1 - j0, j0 * b, j1 * b
        s, se = x.scores(head, j0, j1, bias)
        keep, keep_e = x.keep(head, j0, j1)
        g, qg, lse_g, delta_g = g_all[i, h, r0:r1], head.q[r0:r1], lse[i, h, r0:r1], delta[i, h, r0:r1]
        dq_g = dq[i, h, r0:r1]
        if s is not None:
            gb = g.view(n, b, D)
            P = s.sub_(lse_g.view(n, b, 1)).clamp_min_(_EXP_FLOOR).exp_()  # (n, b, span)
            dS = torch.bmm(gb, head.vT[j0:j1])  # g V^T
            if keep is not None:
                _apply_keep(dS, keep)
            Pk = P if keep is None else _apply_keep(P, keep, "new")
            _fold_add(torch.bmm(Pk.transpose(1, 2), gb), dv[i, h], j0, b)  # dV of the windows
            dS.sub_(delta_g.view(n, b, 1)).mul_(P)
            torch.bmm(dS, head.kT[j0:j1].transpose(1, 2), out=dq_g.view(n, b, D))
            _fold_add(torch.bmm(dS.transpose(1, 2), qg.view(n, b, D)), dk[i, h], j0, b)
        if se is not None:
            Pe = se.sub_(lse_g[:, None]).clamp_min_(_EXP_FLOOR).exp_()  # (n*b, G)
            dSe = torch.mm(g, head.ev.transpose(0, 1))  # g V^T
            if keep_e is not None:
                _apply_keep(dSe, keep_e)
            dev[i, h].addmm_((Pe if keep_e is None else _apply_keep(Pe, keep_e, "new")).transpose(0, 1), g)
            dSe.sub_(delta_g[:, None]).mul_(Pe)
            if s is None:
                torch.mm(dSe, head.ek, out=dq_g)
            else:
                dq_g.addmm_(dSe, head.ek)
            dek[i, h].addmm_(dSe.transpose(0, 1), qg)
    dq = dq[:, :, :T]
    if x.band:
        dk, dv = dk[:, :, x.left : x.left + T], dv[:, :, x.left : x.left + T]
    return dq, dk, dv, dek, dev


def _fold_add(windows: torch.Tensor, out: torch.Tensor, j0: int, b: int) -> None:
    """``out[(j0 + j) * b + c] += windows[j, c]``: the overlapping windows of blocks ``j0 ..`` summed into rows.

    ``windows`` ``(n, span, D)``, contiguous. One ``index_add_`` (a C++ loop over rows of D values) instead of one
    Python-level add per ``b`` columns of the window, which cost more in dispatch than in arithmetic.
    """
    n, span, D = windows.shape
    rows = out[j0 * b : j0 * b + (n - 1) * b + span]
    rows.index_add_(0, _window_rows(n, span, b, out.device), windows.view(n * span, D))


_WINDOW_ROWS: dict = {}


def _window_rows(n: int, span: int, b: int, device) -> torch.Tensor:
    """``(n * span,)`` long: the row of window ``j``, column ``c`` (``j * b + c``), cached per shape."""
    key = (n, span, b, str(device))
    if key not in _WINDOW_ROWS:
        j = torch.arange(n, device=device)[:, None] * b
        _WINDOW_ROWS[key] = (j + torch.arange(span, device=device)[None, :]).reshape(-1)
    return _WINDOW_ROWS[key]
