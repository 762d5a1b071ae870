"""ONNX files as untrusted input: the model file, its tensors, its nodes' attributes, each checked.

What ``from_onnx_model`` (``onnx_read``) reads goes through here:

- the model itself, refused before it is read whole when it is larger than
  protobuf's 2 GiB limit on one message;
- the ``ai.onnx`` opset, from 7 (the first version of today's ``RNN``
  operator; it has versions 7, 14 and 22) to the newest the installed
  ``onnx`` knows;
- every node's inputs, outputs and attributes against the operator's schema
  at that opset (names, types, counts), as ``onnx.checker`` holds them;
- every tensor's type, dims and data, with external data read only from
  files inside the model's folder and never more bytes than its dims and
  type declare.

Every refusal is a ``ValueError`` that names the node, tensor or attribute.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np

MAX_MODEL_BYTES = 2**31 - 1  # protobuf's limit on one serialized message (2 GiB)
FIRST_OPSET = 7  # the RNN operator's versions: 7, 14 (adds layout), 22 (adds bfloat16)


def load_model(model_or_path):
    """``(ModelProto, folder of its external data or None)``; external data is not loaded."""
    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, None
    if isinstance(model_or_path, (bytes, bytearray)):
        return _parse(bytes(model_or_path), "the bytes given"), None
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        size = os.path.getsize(path)
        if size > MAX_MODEL_BYTES:
            raise ValueError(_too_big(f"the file {path!r}", size))
        with _parse_errors(f"the file {path!r}"):
            model = onnx.load(path, load_external_data=False)
        return model, os.path.dirname(os.path.abspath(path))
    if hasattr(model_or_path, "read"):
        size = _size_left(model_or_path)
        if size is not None and size > MAX_MODEL_BYTES:
            raise ValueError(_too_big("the file object", size))
        data = model_or_path.read(MAX_MODEL_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"model_or_path must be a binary file object; its read() gave "
                            f"{type(data).__name__}")
        return _parse(bytes(data), "the file object"), None
    raise TypeError(
        "model_or_path must be an onnx.ModelProto, bytes, a path or a binary file object; "
        f"got {type(model_or_path).__name__}"
    )


def _size_left(f):
    """The bytes a seekable file object holds after its position, else ``None``."""
    try:
        if not f.seekable():
            return None
        here = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(here)
    except (AttributeError, OSError, ValueError):
        return None
    return end - here


def _too_big(what, size):
    return (f"{what} holds {size} bytes, more than protobuf's limit of {MAX_MODEL_BYTES} bytes "
            "for one model (2 GiB); a larger model keeps its weights in external data files")


def _parse(data, what):
    import onnx

    if len(data) > MAX_MODEL_BYTES:
        raise ValueError(_too_big(what, len(data)))
    with _parse_errors(what):
        return onnx.load_from_string(data)


@contextlib.contextmanager
def _parse_errors(what):
    """protobuf's ``DecodeError`` as a ``ValueError`` that names what was read."""
    from google.protobuf.message import DecodeError

    try:
        yield
    except DecodeError as exc:
        raise ValueError(f"{what} is not an ONNX model: protobuf cannot parse it ({exc})") from None


def model_opset(model):
    """The model's ``ai.onnx`` opset, checked: from 7 to the newest the installed onnx knows."""
    import onnx

    top = onnx.defs.onnx_opset_version()
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    accepted = (f"rnn_xp reads ai.onnx opsets {FIRST_OPSET} to {top} (the RNN operator's "
                "versions 7, 14 and 22; opsets before 7 had another RNN)")
    if len(versions) != 1:
        got = "none" if not versions else f"{len(versions)} of them: {versions}"
        raise ValueError(f"the model must import the ai.onnx opset once; it imports {got}. {accepted}")
    if not FIRST_OPSET <= versions[0] <= top:
        raise ValueError(f"the model's ai.onnx opset is {versions[0]}; {accepted}")
    return versions[0]


def label(nd, i):
    """How messages name node ``i``: ``'name' (#i, Op)`` or ``#i (Op)``."""
    return f"{nd.name!r} (#{i}, {nd.op_type})" if nd.name else f"#{i} ({nd.op_type})"


def node_attributes(nd, i, opset):
    """``{name: value}`` of a node's attributes, after checking the node against its schema.

    The node's inputs and outputs are counted against the operator's schema
    at ``opset`` (a required input left empty is missing), and every
    attribute must be one the operator has there, of its type, given once.
    """
    import onnx
    from onnx import AttributeProto, helper

    try:
        schema = onnx.defs.get_schema(nd.op_type, opset, "")
    except onnx.defs.SchemaError:
        raise ValueError(f"node {label(nd, i)}: the {nd.op_type} operator does not exist at "
                         f"opset {opset}") from None
    where = f"node {label(nd, i)} ({nd.op_type} at opset {opset}, version {schema.since_version})"
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for j, formal in enumerate(schema.inputs):
        if formal.option == single and (j >= len(nd.input) or not nd.input[j]):
            raise ValueError(f"{where} lacks its input {formal.name}")
    if len(nd.input) > schema.max_input:
        raise ValueError(f"{where} has {len(nd.input)} inputs; the operator takes at most "
                         f"{schema.max_input}")
    outputs = [name for name in nd.output if name]
    if len(outputs) < schema.min_output or len(nd.output) > schema.max_output:
        raise ValueError(f"{where} has {len(outputs)} outputs; the operator has "
                         f"{schema.min_output} to {schema.max_output}")
    values = {}
    for attr in nd.attribute:
        if attr.name not in schema.attributes:
            raise ValueError(f"{where} has the attribute {attr.name!r}, which the operator does not "
                             f"have; its attributes are {sorted(schema.attributes)}")
        if attr.name in values:
            raise ValueError(f"{where} gives the attribute {attr.name!r} twice")
        want = int(schema.attributes[attr.name].type)
        if attr.ref_attr_name or attr.type != want:
            got = AttributeProto.AttributeType.Name(attr.type)
            raise ValueError(f"attribute {attr.name!r} of {where} is {got}; the operator takes "
                             f"{AttributeProto.AttributeType.Name(want)}")
        values[attr.name] = helper.get_attribute_value(attr)
    return values


def constant_tensor(nd, i, attrs):
    """The ``TensorProto`` a ``Constant`` node holds (``attrs``: its checked attributes)."""
    from onnx import numpy_helper

    if len(attrs) != 1:
        raise ValueError(f"node {label(nd, i)} must hold one value; it has the attributes "
                         f"{sorted(attrs)}")
    (key, value), = attrs.items()
    if key == "value":
        return value
    if key in ("value_float", "value_floats", "value_int", "value_ints"):
        kind = np.float32 if "float" in key else np.int64
        return numpy_helper.from_array(np.asarray(value, dtype=kind), nd.output[0])
    raise ValueError(f"node {label(nd, i)} holds a constant rnn_xp cannot read ({key})")


# onnx.TensorProto data types rnn_xp reads, by what they are for
FLOAT_TYPES = {10: "float16", 16: "bfloat16", 1: "float32", 11: "float64"}
INT_TYPES = {6: "int32", 7: "int64"}
_STORAGE = {1: "float_data", 11: "double_data", 10: "int32_data", 16: "int32_data",
            6: "int32_data", 7: "int64_data"}  # the typed field of each, without raw_data


def tensor_name(tensor, what):
    """How messages name a tensor: its use, and its name when it has one."""
    return f"{what} ({tensor.name!r})" if tensor.name else what


def declared(tensor, what, *, kinds):
    """``(dims, dtype name, itemsize)`` a ``TensorProto`` declares, checked; nothing is decoded.

    ``kinds`` is ``"float"`` (weights and states: float16, bfloat16, float32,
    float64), ``"int"`` (shapes, axes, indices: int32, int64) or
    ``"number"`` (either); another type is a ``ValueError``.
    """
    from onnx import TensorProto, helper

    allowed = {"float": FLOAT_TYPES, "int": INT_TYPES, "number": {**FLOAT_TYPES, **INT_TYPES}}[kinds]
    if tensor.data_type not in allowed:
        known = tensor.data_type in TensorProto.DataType.values()
        got = TensorProto.DataType.Name(tensor.data_type) if known else f"type {tensor.data_type}"
        raise ValueError(f"{tensor_name(tensor, what)} holds {got} values; it must hold one of "
                         f"{', '.join(allowed.values())}")
    if tensor.HasField("segment"):
        raise ValueError(f"{tensor_name(tensor, what)} is one segment of a tensor; rnn_xp reads "
                         "whole tensors")
    dims = list(tensor.dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"{tensor_name(tensor, what)} has negative dims {dims}")
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return dims, allowed[tensor.data_type], itemsize


def tensor_array(tensor, base_dir, what, *, kinds):
    """``(NumPy array, dtype name)`` of a ``TensorProto``, every declared size checked first.

    ``kinds`` as in :func:`declared`. bfloat16 comes back as float32 (exact;
    NumPy has no bfloat16) with the name ``"bfloat16"``. External data is
    read by :func:`read_external`. ``what`` names the tensor's use in
    messages.
    """
    from onnx import TensorProto, numpy_helper

    dims, dtype, itemsize = declared(tensor, what, kinds=kinds)
    name = tensor_name(tensor, what)
    count = math.prod(dims)
    if tensor.data_location == TensorProto.EXTERNAL:
        tensor = _with_raw_data(tensor, read_external(tensor, base_dir, name, count * itemsize))
    else:
        raw = len(tensor.raw_data) > 0
        held = len(tensor.raw_data) if raw else len(getattr(tensor, _STORAGE[tensor.data_type]))
        need = count * itemsize if raw else count
        if held != need:
            unit = "bytes" if raw else "values"
            raise ValueError(f"{name} has dims {dims}, which need {need} {unit}; its data holds {held}")
    array = numpy_helper.to_array(tensor)
    if dtype == "bfloat16":
        array = array.astype(np.float32)  # every bfloat16 value exactly
    return array, dtype


def _with_raw_data(tensor, data):
    """A copy of ``tensor`` holding ``data`` in place of its external reference."""
    from onnx import TensorProto

    out = TensorProto()
    out.CopyFrom(tensor)
    del out.external_data[:]
    out.data_location = TensorProto.DEFAULT
    out.raw_data = data
    return out


def read_external(tensor, base_dir, name, size):
    """The ``size`` bytes of ``tensor``'s external data, from a file inside ``base_dir`` only.

    ``size`` is what the tensor's dims and type declare: the ``length``
    entry must agree with it and the file must hold that many bytes after
    ``offset``; no more is read.
    """
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if base_dir is None:
        raise ValueError(f"{name} is stored in the external file {location!r}: pass the model's "
                         "path, so that it is read from the model's folder")
    if not location or "\0" in location:
        raise ValueError(f"{name} has the external data location {location!r}, which names no file")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if os.path.isabs(location) or os.path.commonpath([root, path]) != root:
        raise ValueError(f"{name} points to the external file {location!r}, outside the model's "
                         f"folder {root!r}; rnn_xp reads external data only from inside it")
    if not os.path.isfile(path):
        raise ValueError(f"{name}: the external file {location!r} is missing from {root!r}")
    offset = _byte_count(info.get("offset", "0"), "offset", name)
    if "length" in info and _byte_count(info["length"], "length", name) != size:
        raise ValueError(f"{name} declares an external length of {info['length']} bytes; its dims "
                         f"{list(tensor.dims)} and type need {size}")
    file_size = os.path.getsize(path)
    if offset > file_size or file_size - offset < size:
        raise ValueError(f"{name} needs {size} bytes at offset {offset} of the external file "
                         f"{location!r}, which holds {file_size} bytes")
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(size)
    if len(data) != size:  # the file shrank while it was read
        raise ValueError(f"{name}: the external file {location!r} gave {len(data)} of {size} bytes")
    return data


def _byte_count(text, key, name):
    """A non-negative whole number of bytes written in decimal digits, else ``ValueError``."""
    if not (isinstance(text, str) and text.isascii() and text.isdigit()):
        raise ValueError(f"{name} has the external data {key} {text!r}; it must be a whole number "
                         "of bytes, written in digits")
    return int(text)


def check_fits_in_memory(count, itemsize, what):
    """``ValueError`` when ``count`` values of ``itemsize`` bytes exceed this machine's memory."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: nothing to compare with
        return
    need = count * itemsize
    if memory > 0 and need > memory:
        raise ValueError(f"{what} need {need / 1e9:,.1f} GB, more than this machine's "
                         f"{memory / 1e9:,.1f} GB of memory")
