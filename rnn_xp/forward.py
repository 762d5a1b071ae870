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

from ._activations import activation, check_activation, check_clip, is_plain
from ._checks import (
    cast,
    check_bool,
    check_features,
    check_float_dtypes,
    check_leak,
    check_lengths,
    check_mask,
    check_same_device,
    check_sequence,
    check_state,
    check_weights,
    require,
)
from ._compat import array_namespace
from .kernels import forward_kernel, own_precision

__all__ = ["rnn_forward", "rnn_step_forward"]


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
        ``"softplus"`` (the ONNX ``RNN`` operator's list; see docs/activations.md).
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
        docs/activations.md).
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
    h_seq, h_last = _forward(
        x, h0, Wx, Wh, b,
        nonlinearity=nonlinearity, batch_first=batch_first, lengths=lengths,
        reverse=reverse, leak=leak, return_sequences=return_sequences, xp=xp,
        activation_alpha=activation_alpha, activation_beta=activation_beta, clip=clip, mask=mask,
    )  # fmt: skip
    return h_seq if return_sequences else h_last


def _forward(
    x, h0, Wx, Wh, b, *, nonlinearity, batch_first, lengths, reverse, leak,
    return_sequences, xp, activation_alpha=None, activation_beta=None, clip=None, mask=None,
):  # fmt: skip
    """Validate, run the kernel, return ``(h_seq or None, h_last)``.

    ``h_last`` is each sequence's state after its last valid step (``h0``
    for a sequence of length 0). The layer and the backward pass use this.
    """
    nonlinearity, alpha, beta = check_activation(nonlinearity, activation_alpha, activation_beta)
    clip = check_clip(clip)
    check_bool("batch_first", batch_first)
    check_bool("reverse", reverse)
    check_bool("return_sequences", return_sequences)
    leak = check_leak(leak)
    require({"Wx": Wx, "Wh": Wh}, ("Wx", "Wh"))

    xp, x_tm, H, D, dtype, dev = check_sequence(
        x, {"h0": h0, "Wx": Wx, "Wh": Wh, "b": b}, batch_first=batch_first, xp=xp
    )
    T, batch = x_tm.shape[0], tuple(x_tm.shape[1:-1])
    if h0 is None:
        h0 = xp.zeros((*batch, H), dtype=dtype, device=dev)
    else:
        check_state("h0", h0, batch, H)
    lengths = check_lengths(xp, lengths, batch, T, dev)
    mask = check_mask(xp, mask, batch, T, dev, lengths=lengths)  # (T, *batch)
    x_tm, h0, Wx, Wh, b = (cast(xp, a, dtype) for a in (x_tm, h0, Wx, Wh, b))

    options = {}  # the portable loop's own options, only when used
    if not is_plain(nonlinearity, alpha, beta, clip) or mask is not None:
        options = {"activation_alpha": alpha, "activation_beta": beta, "clip": clip, "mask": mask}
    kernel = forward_kernel(xp, extended=bool(options))
    h_seq, h_last = kernel(
        xp, x_tm, h0, Wx, Wh, b, nonlinearity=nonlinearity, lengths=lengths,
        reverse=reverse, leak=leak, return_sequences=return_sequences, **options,
    )  # fmt: skip
    if h_seq is not None and batch_first:
        nd = h_seq.ndim
        h_seq = xp.permute_dims(h_seq, (*range(1, nd - 1), 0, nd - 1))  # (*batch, T, H)
    return h_seq, h_last
