"""The forward pass of an Elman RNN, written once against the Array API.

One step of the recurrence, in the row convention (features last)::

    z_t = x_t @ Wx.T + h_{t-1} @ Wh.T + b        # (*batch, H)
    h_t = (1 - alpha) * h_{t-1} + alpha * f(z_t)  # alpha = leak, 1.0 for a plain RNN

``f`` is tanh, relu or any activation of the ONNX ``RNN`` operator (with its
``activation_alpha``/``activation_beta``), optionally applied to ``z_t``
clipped to ``[-clip, clip]``; a Keras-style ``mask`` skips steps.

``rnn_forward`` computes the input projection ``x @ Wx.T + b`` for all T
steps as one matrix product, then runs the recurrence step by step. The
loop itself is a kernel: ``kernels.forward_kernel`` picks one for the
caller's library (``kernels.portable.scan_portable`` runs everywhere and
defines the answer; every faster loop is tested to agree with it). The
fast loops run tanh and relu; the other activations, ``clip`` and ``mask``
fall back to the portable loop.
"""

from __future__ import annotations

from ._activations import activation, check_activation, check_clip
from ._checks import (
    cast,
    check_bool,
    check_features,
    check_float_dtypes,
    check_same_device,
    check_state,
    check_weights,
    require,
)
from ._compat import array_namespace
from ._prepare import pair, prepare
from .cells import ElmanCell, ElmanWeights, GRUCell, GRUWeights, LSTMCell, LSTMWeights
from .kernels import own_precision, scan

__all__ = ["gru_forward", "lstm_forward", "rnn_forward", "rnn_step_forward"]


def rnn_step_forward(x, prev_h, Wx, Wh, b=None, *, nonlinearity="tanh", activation_alpha=None,
                     activation_beta=None, clip=None, xp=None):
    """One step of a simple (Elman) RNN.

    Parameters
    ----------
    x : array
        Input at this step, ``(*batch, D)``; any number of leading batch
        dimensions, including none.
    prev_h : array
        Previous hidden state, ``(*batch, H)``.
    Wx : array
        Input-to-hidden weights, ``(H, D)``.
    Wh : array
        Hidden-to-hidden weights, ``(H, H)``.
    b : array or None, optional
        Bias, ``(H,)``.
    nonlinearity : str, optional
        The activation ``f``: ``"tanh"`` (default), ``"relu"``, ``"sigmoid"``,
        ``"affine"``, ``"leaky_relu"``, ``"thresholded_relu"``,
        ``"scaled_tanh"``, ``"hard_sigmoid"``, ``"elu"``, ``"softsign"`` or
        ``"softplus"`` (the ONNX ``RNN`` operator's list; see :doc:`/activations`).
    activation_alpha, activation_beta : float, optional
        The activation's parameters, for those that take them; ONNX's
        defaults when omitted.
    clip : float, optional
        Clip the pre-activation to ``[-clip, clip]`` before ``f``.
    xp : namespace, optional
        Array namespace; inferred from the arrays when omitted.

    Returns
    -------
    next_h : array
        ``(*batch, H)``, in the inputs' namespace, device and promoted dtype.

    Raises
    ------
    ValueError
        A shape does not match, ``nonlinearity`` is unknown, a parameter does
        not apply to it, or ``clip`` is not positive.
    TypeError
        An input is not a real floating array, or arrays come from two libraries.

    Notes
    -----
    ``next_h = f(clip(x @ Wx.T + prev_h @ Wh.T + b))``.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import rnn_step_forward
    >>> Wx, Wh = np.eye(2), np.zeros((2, 2))
    >>> rnn_step_forward(np.array([0.5, -0.5]), np.zeros(2), Wx, Wh)
    array([ 0.46211716, -0.46211716])
    """
    nonlinearity, alpha, beta = check_activation(nonlinearity, activation_alpha, activation_beta)
    clip = check_clip(clip)
    named = {"x": x, "prev_h": prev_h, "Wx": Wx, "Wh": Wh, "b": b}
    require(named, ("x", "prev_h", "Wx", "Wh"))
    xp = array_namespace(named, xp=xp)
    H, D = check_weights(Wx, Wh, b)
    check_features("x", x, D, "(*batch, D)", 1)
    check_state("prev_h", prev_h, x.shape[:-1], H)
    dtype = check_float_dtypes(xp, named)
    check_same_device(named)
    x, prev_h, Wx, Wh, b = (cast(xp, a, dtype) for a in (x, prev_h, Wx, Wh, b))

    with own_precision(xp, x):  # in the inputs' dtype, torch.autocast or not
        z = x @ Wx.T + prev_h @ Wh.T  # (*batch, H)
        if b is not None:
            z = z + b
        if clip is not None:
            z = xp.clip(z, min=-clip, max=clip)
        return activation(nonlinearity, alpha, beta)(xp, z)


def rnn_forward(
    x,
    h0,
    Wx,
    Wh,
    b=None,
    *,
    nonlinearity="tanh",
    batch_first=False,
    lengths=None,
    reverse=False,
    leak=1.0,
    return_sequences=True,
    activation_alpha=None,
    activation_beta=None,
    clip=None,
    mask=None,
    xp=None,
):
    """Run a simple (Elman) RNN over a whole sequence.

    Parameters
    ----------
    x : array or list of arrays
        Inputs ``(T, *batch, D)`` (time-major), ``(*batch, T, D)`` with
        ``batch_first=True``, or a list/tuple of T arrays ``(*batch, D)``.
    h0 : array or None
        Initial state ``(*batch, H)``; ``None`` means zeros.
    Wx, Wh, b : array
        Weights ``(H, D)``, ``(H, H)`` and bias ``(H,)`` (or ``None``).
    nonlinearity : str, optional
        The activation ``f``: ``"tanh"`` (default), ``"relu"``, or another of
        the ONNX ``RNN`` operator's activations (``"sigmoid"``, ``"affine"``,
        ``"leaky_relu"``, ``"thresholded_relu"``, ``"scaled_tanh"``,
        ``"hard_sigmoid"``, ``"elu"``, ``"softsign"``, ``"softplus"``; see
        :doc:`/activations`).
    batch_first : bool, optional
        Time is axis ``-2`` of ``x`` and of the result instead of axis 0.
    lengths : int array or list of int, optional
        Valid length of each sequence, ``(*batch,)``, values in ``[0, T]``.
        States past a sequence's length are zero in the output, and the
        state stops updating there.
    reverse : bool, optional
        Run each sequence backwards (within its length); states are returned
        in the original time order.
    leak : float, optional
        Leak rate alpha in ``(0, 1]`` of an echo-state network; 1.0 is the
        plain RNN.
    return_sequences : bool, optional
        If False, return only the final state ``(*batch, H)`` (the state at
        each sequence's last valid step), in memory independent of T.
    activation_alpha, activation_beta : float, optional
        The activation's parameters, for those that take them (ONNX's
        defaults when omitted).
    clip : float, optional
        Clip the pre-activation ``z_t`` to ``[-clip, clip]`` before ``f``
        (the ONNX operator's ``clip``).
    mask : bool array or nested list of bool, optional
        ``(*batch, T)`` (batch before time, as in Keras, whatever
        ``batch_first`` is): a False step keeps the state and repeats the
        previous output (zeros before the first valid step), Keras's masking.
        Not together with ``lengths``, the fast special case of a mask that
        is True up to each length.
    xp : namespace, optional
        Array namespace; inferred from the arrays when omitted.

    Returns
    -------
    h_seq : array
        Every hidden state, ``(T, *batch, H)`` (``(*batch, T, H)`` with
        ``batch_first=True``); or the final state ``(*batch, H)`` when
        ``return_sequences=False``.

    Raises
    ------
    ValueError
        A shape does not match, ``nonlinearity``, ``leak``, ``clip`` or
        ``lengths`` is out of range, a parameter does not apply to the
        activation, or both ``lengths`` and ``mask`` are given.
    TypeError
        An input is not a real floating array, ``lengths`` is not integer,
        ``mask`` is not boolean, or arrays come from two libraries.

    Notes
    -----
    For t = 1..T (or T..1 with ``reverse``)::

        h_t = (1 - leak) * h_{t-1} + leak * f(clip(x_t @ Wx.T + h_{t-1} @ Wh.T + b))

    The fast kernels run tanh and relu without ``clip`` and ``mask``; any of
    the other options falls back to the portable loop.

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import rnn_forward
    >>> x = np.ones((3, 1))                 # T = 3 steps, D = 1, no batch
    >>> h = rnn_forward(x, None, np.ones((1, 1)), np.full((1, 1), 0.5))
    >>> h.shape
    (3, 1)
    >>> np.round(h[:, 0], 4)
    array([0.7616, 0.8811, 0.8938])
    """
    cell = ElmanCell(nonlinearity, activation_alpha, activation_beta, clip, leak)
    check_bool("reverse", reverse)
    check_bool("return_sequences", return_sequences)
    p = prepare(cell, x, (h0,), ElmanWeights(Wx, Wh, b), state_labels=("h0",),
                batch_first=batch_first, lengths=lengths, mask=mask, xp=xp)  # fmt: skip
    seqs, finals = scan(p.xp, cell, p.x, p.state0, p.w, lengths=p.lengths, reverse=reverse,
                        return_sequences=return_sequences, mask=p.mask)  # fmt: skip
    if not return_sequences:
        return finals[0]
    return batch_major(p.xp, seqs[0]) if batch_first else seqs[0]


def batch_major(xp, seq):
    """``(T, *batch, F)`` -> ``(*batch, T, F)``."""
    nd = seq.ndim
    return xp.permute_dims(seq, (*range(1, nd - 1), 0, nd - 1))


def lstm_forward(
    x,
    hx,
    W_ih,
    W_hh,
    b_ih=None,
    b_hh=None,
    *,
    W_hr=None,
    peepholes=None,
    batch_first=False,
    lengths=None,
    reverse=False,
    return_sequences=True,
    mask=None,
    activations=None,
    activation_alpha=None,
    activation_beta=None,
    clip=None,
    input_forget=False,
    return_c_seq=False,
    xp=None,
):
    """Run an LSTM over a whole sequence (torch's gates and weights, ONNX's options).

    Parameters
    ----------
    x : array or list of arrays
        Inputs ``(T, *batch, D)`` (time-major), ``(*batch, T, D)`` with
        ``batch_first=True``, or a list of T arrays ``(*batch, D)``.
    hx : pair of arrays, or None
        ``(h0, c0)``: initial hidden state ``(*batch, P)`` and cell state
        ``(*batch, H)``; ``None`` (or a ``None`` entry) means zeros.
    W_ih, W_hh : array
        ``(4H, D)`` and ``(4H, P)``, the gates in torch's order i, f, g, o
        (``torch.nn.LSTM``'s ``weight_ih_l0``, ``weight_hh_l0``).
    b_ih, b_hh : array or None, optional
        ``(4H,)`` each.
    W_hr : array or None, optional
        The projection ``(P, H)`` (torch's ``proj_size``): ``h_t = (o * tanh(c_t)) @ W_hr.T``.
        Without it ``P = H``.
    peepholes : array or None, optional
        ``(3H,)``: the peephole weights of the gates i, f and o, in that
        order (ONNX's ``P`` holds them as i, o, f; see :doc:`/lstm`).
    batch_first, lengths, reverse, return_sequences, mask, xp
        As for :func:`rnn_forward`.
    activations : sequence of 3 str, optional
        ``(f, g, h)``, ONNX's names for the gates', the cell input's and the
        cell output's activation (rnn_xp's spelling: ``"sigmoid"``,
        ``"tanh"``, ``"relu"``, ``"hard_sigmoid"``, ...); default
        ``("sigmoid", "tanh", "tanh")``.
    activation_alpha, activation_beta : sequence of 3, optional
        Their parameters (``None`` entries for the defaults).
    clip : float, optional
        Clip every gate's pre-activation to ``[-clip, clip]`` (ONNX's ``clip``).
    input_forget : bool, optional
        Couple the forget gate to the input gate, ``f = 1 - i`` (ONNX's ``input_forget``).
    return_c_seq : bool, optional
        Also return every cell state (what :func:`rnn_xp.lstm_backward` needs).

    Returns
    -------
    output : array
        ``(T, *batch, P)`` (``(*batch, T, P)`` with ``batch_first``): every
        hidden state, zeros past each sequence's length.
    (h_n, c_n) : pair of arrays
        The states after each sequence's last valid step, ``(*batch, P)`` and
        ``(*batch, H)`` (``h0``, ``c0`` for a sequence of length 0). With
        ``return_sequences=False`` this pair alone is returned, in memory
        independent of T.
    c_seq : array
        Only with ``return_c_seq=True``: every cell state, laid out as ``output``.

    Raises
    ------
    ValueError
        A shape does not match (the message names the argument), an option
        is out of range, or both ``lengths`` and ``mask`` are given.
    TypeError
        ``hx`` is not a pair, an input is not a real floating array, or
        arrays come from two libraries.

    Notes
    -----
    One step (torch's ``nn.LSTM``; ``p_i``, ``p_f``, ``p_o`` the peepholes)::

        z   = x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh
        i   = sigmoid(z_i + p_i * c_{t-1}),  f = sigmoid(z_f + p_f * c_{t-1}),  g = tanh(z_g)
        c_t = f * c_{t-1} + i * g
        o   = sigmoid(z_o + p_o * c_t),      h_t = (o * tanh(c_t)) @ W_hr.T

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import lstm_forward
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((5, 2, 3))               # T = 5, B = 2, D = 3
    >>> W_ih, W_hh = rng.standard_normal((16, 3)), rng.standard_normal((16, 4))   # H = 4
    >>> output, (h_n, c_n) = lstm_forward(x, None, W_ih, W_hh)
    >>> output.shape, h_n.shape, c_n.shape
    ((5, 2, 4), (2, 4), (2, 4))
    >>> bool(np.array_equal(output[-1], h_n))
    True
    """
    cell = LSTMCell(activations or ("sigmoid", "tanh", "tanh"), activation_alpha, activation_beta,
                    clip, input_forget)  # fmt: skip
    for name, value in (("reverse", reverse), ("return_sequences", return_sequences),
                        ("return_c_seq", return_c_seq)):  # fmt: skip
        check_bool(name, value)
    if return_c_seq and not return_sequences:
        raise ValueError("return_c_seq=True returns every cell state: it needs return_sequences=True")
    p = prepare(cell, x, pair("hx", hx, ("h0", "c0")), LSTMWeights(W_ih, W_hh, b_ih, b_hh, W_hr, peepholes),
                state_labels=("h0", "c0"), batch_first=batch_first, lengths=lengths, mask=mask,
                xp=xp)  # fmt: skip
    seqs, finals = scan(p.xp, cell, p.x, p.state0, p.w, lengths=p.lengths, reverse=reverse,
                        return_sequences=return_sequences, mask=p.mask)  # fmt: skip
    finals = tuple(finals)
    if not return_sequences:
        return finals
    if batch_first:
        seqs = tuple(batch_major(p.xp, q) for q in seqs)
    return (seqs[0], finals, seqs[1]) if return_c_seq else (seqs[0], finals)


def gru_forward(
    x,
    h0,
    W_ih,
    W_hh,
    b_ih=None,
    b_hh=None,
    *,
    batch_first=False,
    lengths=None,
    reverse=False,
    return_sequences=True,
    mask=None,
    activations=None,
    activation_alpha=None,
    activation_beta=None,
    clip=None,
    linear_before_reset=True,
    xp=None,
):
    """Run a GRU over a whole sequence (torch's gates and weights, ONNX's options).

    Parameters
    ----------
    x : array or list of arrays
        Inputs ``(T, *batch, D)`` (time-major), ``(*batch, T, D)`` with
        ``batch_first=True``, or a list of T arrays ``(*batch, D)``.
    h0 : array or None
        Initial state ``(*batch, H)``; ``None`` means zeros.
    W_ih, W_hh : array
        ``(3H, D)`` and ``(3H, H)``, the gates in torch's order r, z, n
        (``torch.nn.GRU``'s ``weight_ih_l0``, ``weight_hh_l0``).
    b_ih, b_hh : array or None, optional
        ``(3H,)`` each; ``b_hh``'s last block stays inside the reset (see Notes).
    batch_first, lengths, reverse, return_sequences, mask, xp
        As for :func:`rnn_forward`.
    activations : sequence of 2 str, optional
        ``(f, g)``: the gates' and the candidate's activation (ONNX's
        ``activations`` in rnn_xp's spelling); default ``("sigmoid", "tanh")``.
    activation_alpha, activation_beta : sequence of 2, optional
        Their parameters (``None`` entries for the defaults).
    clip : float, optional
        Clip every pre-activation to ``[-clip, clip]`` (ONNX's ``clip``).
    linear_before_reset : bool, optional
        True (default; torch, ONNX's ``linear_before_reset=1``, Keras's
        ``reset_after=True``): ``n = tanh(x W_in.T + b_in + r * (h W_hn.T + b_hn))``.
        False (ONNX's default, Keras's ``reset_after=False``):
        ``n = tanh(x W_in.T + b_in + (r * h) W_hn.T + b_hn)``.

    Returns
    -------
    h_seq : array
        Every hidden state ``(T, *batch, H)`` (``(*batch, T, H)`` with
        ``batch_first``), or the final state ``(*batch, H)`` with
        ``return_sequences=False``.

    Raises
    ------
    ValueError
        A shape does not match (the message names the argument), an option
        is out of range, or both ``lengths`` and ``mask`` are given.
    TypeError
        ``h0`` is not an array (a GRU has one state, not an LSTM's pair), an
        input is not a real floating array, or arrays come from two libraries.

    Notes
    -----
    One step (torch's ``nn.GRU``)::

        r = sigmoid(x W_ir.T + b_ir + h W_hr.T + b_hr)
        z = sigmoid(x W_iz.T + b_iz + h W_hz.T + b_hz)
        n = tanh(x W_in.T + b_in + r * (h W_hn.T + b_hn))
        h' = (1 - z) * n + z * h

    Examples
    --------
    >>> import numpy as np
    >>> from rnn_xp import gru_forward
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((5, 2, 3))               # T = 5, B = 2, D = 3
    >>> W_ih, W_hh = rng.standard_normal((12, 3)), rng.standard_normal((12, 4))   # H = 4
    >>> gru_forward(x, None, W_ih, W_hh).shape
    (5, 2, 4)
    """
    if isinstance(h0, (tuple, list)):
        raise TypeError(
            "h0 must be an array (*batch, H) or None: a GRU carries one state; got a "
            f"{type(h0).__name__} (an LSTM's (h0, c0) pair?)"
        )
    cell = GRUCell(activations or ("sigmoid", "tanh"), activation_alpha, activation_beta, clip,
                   linear_before_reset)  # fmt: skip
    check_bool("reverse", reverse)
    check_bool("return_sequences", return_sequences)
    p = prepare(cell, x, (h0,), GRUWeights(W_ih, W_hh, b_ih, b_hh), state_labels=("h0",),
                batch_first=batch_first, lengths=lengths, mask=mask, xp=xp)  # fmt: skip
    seqs, finals = scan(p.xp, cell, p.x, p.state0, p.w, lengths=p.lengths, reverse=reverse,
                        return_sequences=return_sequences, mask=p.mask)  # fmt: skip
    if not return_sequences:
        return finals[0]
    return batch_major(p.xp, seqs[0]) if batch_first else seqs[0]
