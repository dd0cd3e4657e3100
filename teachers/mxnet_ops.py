"""MXNet op → Keras layers (NHWC), one builder per op in :data:`MXNET_OPS`.

A builder takes a :class:`teachers.mxnet_symbol.Node` (attributes, input tensors, weights)
and returns the output tensor. MXNet is NCHW: OIHW kernels become HWIO (depthwise: HW·C·M),
channel axis 1 becomes the last axis, and ``Flatten`` transposes to NCHW first so flattened
features keep MXNet's C·H·W order (a following ``FullyConnected`` then needs no permutation).
"""
from __future__ import annotations

import math

import numpy as np

from distill.registry import Registry
from teachers.base import TeacherError

#: op name → builder(node) → tensor
MXNET_OPS = Registry("MXNet op", error=TeacherError)
#: ops that only rescale/shift values (an input followed by these normalises raw pixels)
SCALAR_OPS = ("_minus_scalar", "_mul_scalar", "_plus_scalar", "_div_scalar", "_rminus_scalar")
ACTIVATIONS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softrelu": "softplus",
               "softsign": "softsign"}


def op(*names):
    """Register a builder under one or more MXNet op names."""
    def add(builder):
        for name in names:
            MXNET_OPS.register(name, builder)
        return builder
    return add


def _set(layer, x, weights):
    """Call ``layer`` on ``x`` (building it) and give it ``weights``."""
    y = layer(x)
    layer.set_weights([np.asarray(w, np.float32) for w in weights])
    return y


def _pad(node, x, pads, suffix="_pad"):
    """Zero-pad NHWC ``x`` by ((top, bottom), (left, right)); nothing when all zero."""
    import keras

    if not any(v for pair in pads for v in pair):
        return x
    return keras.layers.ZeroPadding2D(pads, name=node.layer_name(suffix))(x)


@op("Convolution")
def convolution(node):
    """2-D convolution: grouped, depthwise (``num_group`` = channels), dilated, padded."""
    import keras

    x = node.input(0, ndim=4)
    if node.attr("layout", "NCHW", str) not in ("NCHW", "None"):
        raise node.fail(f"layout {node.attrs['layout']!r} is not supported (NCHW only)")
    kernel, stride = node.attr("kernel", kind="pair"), node.attr("stride", (1, 1), "pair")
    pad, dilate = node.attr("pad", (0, 0), "pair"), node.attr("dilate", (1, 1), "pair")
    filters, groups = node.attr("num_filter", kind=int), node.attr("num_group", 1, int)
    channels = int(x.shape[-1])
    if channels % groups or filters % groups:
        raise node.fail(f"num_group={groups} does not divide {channels} input and {filters} output channels")
    if max(stride) > 1 and max(dilate) > 1:
        raise node.fail("strides and dilation together are not supported by Keras")
    weight = node.weight(1, (filters, channels // groups) + kernel)
    bias = [] if node.attr("no_bias", False, bool) else [node.weight(2, (filters,))]
    same = stride == (1, 1) and all(2 * p == d * (k - 1) for p, d, k in zip(pad, dilate, kernel))
    x = x if same else _pad(node, x, tuple((p, p) for p in pad))
    options = dict(strides=stride, padding="same" if same else "valid", dilation_rate=dilate,
                   use_bias=bool(bias), name=node.layer_name())
    if groups == channels and groups > 1:
        layer = keras.layers.DepthwiseConv2D(kernel, depth_multiplier=filters // channels, **options)
        kernel_hwcm = weight.reshape((channels, filters // channels) + kernel).transpose(2, 3, 0, 1)
        return _set(layer, x, [kernel_hwcm] + bias)
    layer = keras.layers.Conv2D(filters, kernel, groups=groups, **options)
    return _set(layer, x, [weight.transpose(2, 3, 1, 0)] + bias)


@op("BatchNorm")
def batch_norm(node):
    """Inference BN: ``fix_gamma`` (default True) means gamma is 1 whatever is stored; eps 1e-3."""
    import keras

    x = node.input(0)
    if node.attr("axis", 1, int) != 1:
        raise node.fail(f"axis={node.attrs['axis']} is not supported (the channel axis 1 only)")
    channels = int(x.shape[-1])
    gamma = np.ones(channels, np.float32) if node.attr("fix_gamma", True, bool) else node.weight(1, (channels,))
    weights = [gamma] + [node.weight(i, (channels,)) for i in (2, 3, 4)]
    layer = keras.layers.BatchNormalization(axis=-1, epsilon=node.attr("eps", 1e-3, float), name=node.layer_name())
    return _set(layer, x, weights)


@op("Activation")
def activation(node):
    import keras

    kind = node.attr("act_type", kind=str)
    if kind not in ACTIVATIONS:
        raise node.fail(f"act_type {kind!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
    return keras.layers.Activation(ACTIVATIONS[kind], name=node.layer_name())(node.input(0))


@op("LeakyReLU")
def leaky_relu(node):
    """``prelu`` (learned per-channel slopes ``gamma``), ``leaky`` and ``elu`` (``slope``, 0.25)."""
    import keras

    x, kind = node.input(0), node.attr("act_type", "leaky", str)
    slope = node.attr("slope", 0.25, float)
    if kind == "leaky":
        return keras.layers.LeakyReLU(negative_slope=slope, name=node.layer_name())(x)
    if kind == "elu":
        return keras.layers.ELU(alpha=slope, name=node.layer_name())(x)
    if kind != "prelu":
        raise node.fail(f"act_type {kind!r} is not supported; supported: prelu, leaky, elu")
    channels = int(x.shape[-1])
    gamma = node.weight(1)
    if gamma.size not in (1, channels):
        raise node.fail(f"gamma has {gamma.size} values for {channels} channels")
    shared = [1, 2] if len(x.shape) == 4 else None
    layer = keras.layers.PReLU(shared_axes=shared, name=node.layer_name())
    alpha = np.broadcast_to(gamma.reshape(-1), (channels,))
    return _set(layer, x, [alpha.reshape((1, 1, channels) if shared else (channels,))])


@op("elemwise_add", "_Plus", "_plus", "_add", "broadcast_add", "broadcast_plus")
def add(node):
    """Sum of two tensors (broadcasting, e.g. a 1×1 map onto a feature map)."""
    import keras

    return keras.layers.Add(name=node.layer_name())([node.input(0), node.input(1)])


@op("elemwise_mul", "_Mul", "_mul", "broadcast_mul")
def multiply(node):
    """Product of two tensors (broadcasting: squeeze-and-excitation gates)."""
    import keras

    return keras.layers.Multiply(name=node.layer_name())([node.input(0), node.input(1)])


def _pool_pads(node, size, kernel, stride, pad, full):
    """((before, after), ...) per spatial axis: ``pad`` both sides, plus what the ``full``
    convention (ceil) adds after the last window."""
    pads = []
    for n, k, s, p in zip(size, kernel, stride, pad):
        span = n + 2 * p - k
        if span < 0:
            raise node.fail(f"kernel {kernel} is larger than the padded input {tuple(size)}")
        windows = (math.ceil(span / s) if full else span // s) + 1
        pads.append((p, p + max(0, (windows - 1) * s + k - (n + 2 * p))))
    return tuple(pads)


def _pad_lowest(node, x, pads):
    """Pad with -1e30 (max pooling ignores padded cells, as MXNet's does) using stock layers:
    a mask of ones, zero-padded, turned into 0 inside / -1e30 outside, added to the padded map."""
    import keras

    ones = keras.layers.Rescaling(0.0, 1.0, name=node.layer_name("_ones"))(x)
    mask = _pad(node, ones, pads, "_mask")
    low = keras.layers.Rescaling(1e30, -1e30, name=node.layer_name("_low"))(mask)
    return keras.layers.Add(name=node.layer_name("_padded"))([_pad(node, x, pads), low])


@op("Pooling")
def pooling(node):
    """max/avg/sum pooling: global, or kernel/stride/pad with the valid or full convention."""
    import keras

    x, kind = node.input(0, ndim=4), node.attr("pool_type", "max", str)
    if kind not in ("max", "avg", "sum"):
        raise node.fail(f"pool_type {kind!r} is not supported; supported: max, avg, sum")
    height, width = int(x.shape[1]), int(x.shape[2])
    if node.attr("global_pool", False, bool):
        layer = keras.layers.GlobalMaxPooling2D if kind == "max" else keras.layers.GlobalAveragePooling2D
        y, window = layer(keepdims=True, name=node.layer_name())(x), height * width
    else:
        convention = node.attr("pooling_convention", "valid", str)
        if convention not in ("valid", "full"):
            raise node.fail(f"pooling_convention {convention!r} is not supported; supported: valid, full")
        kernel, stride = node.attr("kernel", kind="pair"), node.attr("stride", (1, 1), "pair")
        pad = node.attr("pad", (0, 0), "pair")
        pads = _pool_pads(node, (height, width), kernel, stride, pad, convention == "full")
        if kind == "max":
            x = _pad_lowest(node, x, pads) if any(v for pair in pads for v in pair) else x
            return keras.layers.MaxPooling2D(kernel, stride, name=node.layer_name())(x)
        if any(after > before for before, after in pads):
            raise node.fail("average pooling whose 'full' windows run past the padding is not supported")
        if any(pad) and not node.attr("count_include_pad", True, bool):
            raise node.fail("average pooling with count_include_pad=False and padding is not supported")
        y = keras.layers.AveragePooling2D(kernel, stride, name=node.layer_name())(_pad(node, x, pads))
        window = kernel[0] * kernel[1]
    if kind == "sum":
        y = keras.layers.Rescaling(float(window), name=node.layer_name("_sum"))(y)
    return y


def _flatten(node, x):
    """Flatten in MXNet's order (C, H, W): transpose NHWC → NCHW first when H·W > 1."""
    import keras

    if len(x.shape) == 2:
        return x
    if int(np.prod(x.shape[1:-1])) > 1:
        x = keras.layers.Permute((3, 1, 2), name=node.layer_name("_nchw"))(x)
    return keras.layers.Flatten(name=node.layer_name("_flatten" if node.op != "Flatten" else ""))(x)


@op("Flatten", "flatten")
def flatten(node):
    return _flatten(node, node.input(0))


@op("FullyConnected")
def fully_connected(node):
    """Dense layer on the (C·H·W-flattened) input; ``no_bias``; ``flatten=False`` on 2-D only."""
    import keras

    x = node.input(0)
    if node.attr("flatten", True, bool):
        x = _flatten(node, x)
    elif len(x.shape) != 2:
        raise node.fail("flatten=False on a feature map is not supported")
    units = node.attr("num_hidden", kind=int)
    weight = node.weight(1, (units, int(x.shape[-1])))
    bias = [] if node.attr("no_bias", False, bool) else [node.weight(2, (units,))]
    layer = keras.layers.Dense(units, use_bias=bool(bias), name=node.layer_name())
    return _set(layer, x, [weight.T] + bias)


@op("Dropout", "identity", "_copy", "BlockGrad", "stop_gradient")
def identity(node):
    """Identity at inference (dropout included)."""
    return node.input(0)


@op(*SCALAR_OPS)
def scalar(node):
    """``x - s``, ``x * s``, ``x + s``, ``x / s``, ``s - x`` as one ``Rescaling`` layer."""
    import keras

    s = node.attr("scalar", kind=float)
    if node.op == "_div_scalar" and s == 0:
        raise node.fail("division by a zero scalar")
    scale, offset = {"_minus_scalar": (1.0, -s), "_mul_scalar": (s, 0.0), "_plus_scalar": (1.0, s),
                     "_div_scalar": (1.0 / s if s else 0.0, 0.0), "_rminus_scalar": (-1.0, s)}[node.op]
    return keras.layers.Rescaling(scale, offset, name=node.layer_name())(node.input(0))
