"""Moving a layer between libraries, devices and dtypes; its state dict; pickling.

``Moving`` is a part of every layer (``Recurrent`` derives from it): torch's
``to`` and ``state_dict``/``load_state_dict``, ``from_params`` (a layer
made from given weights, none drawn), and pickling, where the library
travels by name.
"""

from __future__ import annotations

from .._backends import dtype_name, library_name, move, resolve_dtype, resolve_namespace
from .._devices import dtype_arg, family, target, to_kind, where
from .._params import check_state_dict
from .pytree import register_pytree

__all__ = ["Moving"]


class Moving:
    """``to``, ``state_dict``, ``load_state_dict``, ``from_params`` and pickling of a layer."""

    @classmethod
    def from_params(cls, params, *args, names=None, **kwargs):
        """A layer made as ``cls(*args, **kwargs)`` that holds ``params`` instead of drawn weights.

        The same layer as ``cls(*args, **kwargs).load_state_dict(params)``
        (its ``generator`` too, when ``seed`` is given), without drawing the
        initial weights first: the configuration and every key and shape of
        ``params`` are checked before anything is allocated, and only the
        given arrays are copied. The converters build their layers this way.

        Parameters
        ----------
        params : mapping
            torch's names to arrays of any library, as in :meth:`load_state_dict`.
        *args, **kwargs
            The configuration, as the layer's constructor takes it.
        names : mapping, optional
            What error messages call each array (a converter's own names,
            such as ``"kernel"``); default ``state_dict['weight_ih_l0']``, ...

        Returns
        -------
        layer
            Of the class it is called on.

        Raises
        ------
        ValueError, TypeError
            As the constructor and :meth:`load_state_dict` raise them.

        Examples
        --------
        >>> import numpy as np
        >>> from rnn_xp import RNN
        >>> params = RNN(3, 4, seed=1).state_dict()
        >>> rnn = RNN.from_params(params, 3, 4, dtype="float64")
        >>> rnn.dtype, bool(np.array_equal(rnn.weight_hh_l0, params["weight_hh_l0"]))
        (dtype('float64'), True)
        """
        layer = cls.__new__(cls)
        layer._given_params = (params, names)  # read (and removed) by __init__
        layer.__init__(*args, **kwargs)
        return layer

    # -- pickling: the library travels by name ----------------------------------

    def __getstate__(self):
        state = dict(self.__dict__)
        state["xp"] = family(self.xp) or library_name(self.xp)
        del state["device"], state["dtype"]  # read off the parameters again
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.xp, _ = resolve_namespace(state["xp"], None)
        self.device, self.dtype = where(self.params)
        register_pytree(type(self))

    def to(self, *args, xp=None, device=None, dtype=None):
        """Move the parameters to another library, device or dtype; return ``self``.

        Called as ``torch.nn.Module.to`` is: ``rnn.to("cuda")``,
        ``rnn.to(torch.device("cpu"))``, ``rnn.to(torch.float64)``,
        ``rnn.to("cpu", "float64")``, or with keywords. Each positional
        argument is read as a library, a device or a dtype by what it is.

        Parameters
        ----------
        *args : library, device or dtype
            A library: a module (``numpy``, ``torch``, ``jax.numpy``, ...) or a
            name (``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"``,
            ``"array_api_strict"``, ``"dask"``). A device: a string
            (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"gpu"``) or a device object.
            A dtype: a name (``"float64"``) or a dtype of any library
            (``torch.float64``, ``jnp.float32``, ``np.float64``).
        xp : namespace, module or str, optional
            The library; the current one when omitted, except that a device
            object of another library (``torch.device("cpu")`` on a NumPy
            layer) moves the layer to that library.
        device : str or device, optional
            The device. A string is read in the target library: ``"cpu"``
            and ``"cuda:N"`` for torch, ``"cpu"`` and ``"gpu"`` (or
            ``"cuda"``) for JAX. NumPy, array-api-strict and Dask have only
            the CPU: ``"cuda"`` moves such a layer to CuPy, NumPy's
            interface on the GPU (and ``"cpu"`` a CuPy layer back to NumPy).
            When omitted: the current device (same library) or the
            library's default.
        dtype : str or dtype, optional
            The target dtype; the current one when omitted. A dtype changes
            the dtype only, never the library: ``rnn.to(torch.float64)``
            keeps a NumPy layer in NumPy.

        Returns
        -------
        RNN
            This layer, changed in place (like ``torch.nn.Module.to``).

        Raises
        ------
        TypeError
            An argument is none of a library, a device or a dtype, or two
            arguments give the same thing.
        ValueError
            A string names no library, device or dtype that rnn_xp knows.
        rnn_xp._backends.BackendUnavailable
            The library is not installed or has no such device (``"cuda"``
            without a CUDA device).

        Examples
        --------
        >>> import numpy as np
        >>> from rnn_xp import RNN
        >>> rnn = RNN(2, 3, seed=0).to(np.float64)
        >>> rnn.weight_hh_l0.dtype
        dtype('float64')
        >>> rnn.to("cpu", "float32").device, rnn.dtype
        ('cpu', dtype('float32'))
        """
        given = {"xp": xp, "device": device, "dtype": dtype}
        for arg in args:
            kind = to_kind(arg)
            if given[kind] is not None:
                raise TypeError(f"rnn.to got two {kind} arguments: {given[kind]!r} and {arg!r}")
            given[kind] = arg
        xp, dev = target(self.xp, self.device, given["xp"], given["device"])
        dtype = given["dtype"]
        dtype = dtype_name(self.xp, self.dtype) if dtype is None else dtype_arg(dtype)
        dtype = resolve_dtype(xp, dtype)
        self.params = {name: move(p, xp, dev, dtype, name=name) for name, p in self.params.items()}
        self.xp = xp
        self.device, self.dtype = where(self.params)
        register_pytree(type(self))
        return self

    def state_dict(self, *, xp=None, device=None):
        """The parameters under torch's names, in torch's order (a new dict).

        Parameters
        ----------
        xp : namespace, module or str, optional
            Return copies as arrays of this library, in the layer's dtype:
            ``xp="torch"`` gives tensors that ``torch.nn.RNN.load_state_dict``
            takes (:func:`rnn_xp.convert.torch_state_dict` does the same).
            Default: the layer's own arrays (not copies).
        device : str or device, optional
            The device of the copies, read as in :meth:`to`.

        Returns
        -------
        dict
            ``{name: array}``.

        Examples
        --------
        >>> import torch
        >>> from rnn_xp import RNN
        >>> rnn = RNN(3, 4, num_layers=2, seed=0)
        >>> module = torch.nn.RNN(3, 4, num_layers=2)
        >>> module.load_state_dict(rnn.state_dict(xp="torch"))
        <All keys matched successfully>
        """
        if xp is None and device is None:
            return dict(self.params)
        xp, dev = target(self.xp, self.device, xp, device)
        dtype = resolve_dtype(xp, dtype_name(self.xp, self.dtype))
        return {name: move(p, xp, dev, dtype) for name, p in self.params.items()}

    def load_state_dict(self, state_dict):
        """Replace every parameter from a mapping with torch's names; return ``self``.

        The values may be arrays of any library (torch tensors included); they
        are copied into the layer's library, device and dtype.

        Raises
        ------
        ValueError
            Keys are missing or unexpected, or a value has the wrong shape; the
            message lists all of them.
        TypeError
            ``state_dict`` is not a mapping, or a value is not a real floating array.
        """
        self._load(state_dict)
        return self

    def _load(self, state_dict, names=None):
        """``load_state_dict``; ``names`` maps parameter names to what messages call the arrays."""
        shapes = self.param_shapes()
        check_state_dict(state_dict, shapes, repr(self))
        names = {} if names is None else names
        self.params = {
            name: move(state_dict[name], self.xp, self.device, self.dtype,
                       name=names.get(name, f"state_dict[{name!r}]"))
            for name in shapes
        }
