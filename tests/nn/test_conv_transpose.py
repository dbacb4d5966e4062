"""ConvTranspose2D / ConvTranspose1D: values and gradients against the op's twin (and
lax.conv_transpose for 1-D), Flax's ``nn.ConvTranspose`` with copied weights ('SAME',
'VALID', explicit padding; both kernel conventions), PyTorch's ``ConvTranspose1d``;
params shapes, the forward-preserving He fan-in, describe/summary; a tiny U-Net whose
gradients equal its reference_mode twin's and which trains; errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnet import nn, ops, optim
from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R
from tests.nn._models import abstract_init, numpy_init, randn, random_params
from tests.ops._cases import assert_raises_everywhere

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)



# name: (layer, x shape, the twin on (x, w, b) in NHWC / (KH, KW, Kg, Cin))
LAYERS = {
    "2d-grouped-op": (
        lambda: nn.ConvTranspose2D(6, (3, 2), 2, (1, 0), 1, groups=2, dtype=F64),
        (2, 3, 4, 4),
        lambda x, w, b: R.conv_transpose2d(x, w, b, 2, (1, 0), 1, 1, 2)),
    "1d-dilated-same": (
        lambda: nn.ConvTranspose1D(3, 3, stride=2, padding="SAME", dilation=2, dtype=F64),
        (2, 5, 4),
        lambda x, w, b: R.conv_transpose2d(x[:, None], w[None], b, (1, 2), "SAME",
                                           dilation=(1, 2))[:, 0]),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_values_and_gradients_equal_the_twin(name):
    make, shape, twin = LAYERS[name]
    layer = make()
    out_shape = abstract_init(layer, (-1,) + shape[1:])[0]
    p = random_params(layer, (-1,) + shape[1:], seed=1)
    x = randn(shape, seed=5)

    def ours(p, x):
        return layer.apply(p, (), x)[0]

    def theirs(p, x):
        return twin(x, p["w"], p["b"])

    @jax.jit
    def both(p, x):
        y = theirs(p, x)
        ct = jnp.cos(jnp.arange(y.size, dtype=F64)).reshape(y.shape)
        return ours(p, x), y, ours(p, x[0]), [jax.vjp(f, p, x)[1](ct) for f in (ours, theirs)]

    y, y_ref, y_one, (g, g_ref) = both(p, x)
    assert out_shape == (-1,) + y.shape[1:]
    assert_close(y, y_ref, 1e-10, f"{name}: value")
    assert_close(y_one, y_ref[0], 1e-10, f"{name}: one example, no batch axis")
    assert_close(g, g_ref, 1e-10, f"{name}: vjp")


def test_conv_transpose1d_equals_lax_and_pytorch():
    """ConvTranspose1D(padding=p, output_padding=e) against lax.conv_transpose (always)
    and torch.nn.functional.conv_transpose1d (weight ``(Cin, Cout, K)`` = ``w.T``)."""
    layer = nn.ConvTranspose1D(3, 4, stride=3, padding=1, output_padding=2, dtype=F64)
    x = randn((2, 5, 2), seed=2)
    p = random_params(layer, (-1, 5, 2), seed=3)
    y = jax.jit(lambda p, x: layer.apply(p, (), x)[0])(p, x)
    want = lax.conv_transpose(x, p["w"], (3,), [(4 - 1 - 1, 4 - 1 - 1 + 2)],
                              dimension_numbers=("NWC", "WIO", "NWC"), transpose_kernel=True)
    assert y.shape == (2, (5 - 1) * 3 - 2 + 4 + 2, 3)
    assert_close(y, want + p["b"][None, None], 1e-12, "vs lax.conv_transpose")
    torch = pytest.importorskip("torch")
    got = torch.nn.functional.conv_transpose1d(
        torch.tensor(np.asarray(x)).permute(0, 2, 1),
        torch.tensor(np.asarray(p["w"])).permute(2, 1, 0), torch.tensor(np.asarray(p["b"])),
        3, 1, 2).permute(0, 2, 1).numpy()
    assert_close(y, got, 1e-12, "vs torch")


def test_equals_flax_conv_transpose_with_copied_weights():
    """'SAME' and 'VALID' (Flax's meanings), and Flax's explicit padding of the dilated
    input ``(d*(K-1) - lo, d*(K-1) - hi + output_padding)`` as our PyTorch-style padding;
    Flax's kernel with ``transpose_kernel=True`` as it is, its default kernel flipped and
    with its channel axes swapped (one jitted program)."""
    linen = pytest.importorskip("flax.linen")
    x = randn((2, 3, 4, 4), seed=7)
    cases = [  # (Flax layer, ours)
        (dict(kernel_size=(3, 3), strides=(2, 2), padding="SAME"),
         dict(kernel_size=3, stride=2, padding="SAME")),
        (dict(kernel_size=(2, 4), strides=(3, 2), padding="VALID", kernel_dilation=(1, 2)),
         dict(kernel_size=(2, 4), stride=(3, 2), padding="VALID", dilation=(1, 2))),
        (dict(kernel_size=(4, 3), strides=(2, 2), padding=((2, 3), (1, 2))),
         dict(kernel_size=(4, 3), stride=2, padding=(1, 1), output_padding=(1, 1))),
    ]
    pairs = [(linen.ConvTranspose(5, **f, transpose_kernel=t, dtype=F64, param_dtype=F64),
              nn.ConvTranspose2D(5, **o, dtype=F64), t)
             for (f, o), t in zip(cases + cases[-1:], (True, True, True, False))]
    params = [random_params(layer, (-1, 3, 4, 4), seed=10 + i)
              for i, (_, layer, _) in enumerate(pairs)]

    @jax.jit
    def both(params, x):
        out = []
        for (flax_layer, layer, transpose_kernel), p in zip(pairs, params):
            kernel = p["w"] if transpose_kernel else jnp.flip(p["w"], (0, 1)).swapaxes(2, 3)
            out.append((layer.apply(p, (), x)[0],
                        flax_layer.apply({"params": {"kernel": kernel, "bias": p["b"]}}, x)))
        return out

    for (ours, theirs), (flax_layer, _, _) in zip(both(params, x), pairs):
        assert_close(ours, theirs, 1e-10, str(flax_layer))
    kernel = pairs[0][0].init(KEY, x)["params"]["kernel"]         # Flax's own shape
    assert kernel.shape == params[0]["w"].shape == (3, 3, 5, 4)


def test_params_shapes_forward_preserving_fan_in_describe_and_summary():
    """Kernels are ``(KH, KW, features/groups, Cin)``; at init ``E[y^2] = 2 E[x^2]`` in
    the interior at stride 2 (fan_in ``KH*KW*Cin/(groups*s*s)``) where PyTorch's fan
    (``jax.nn.initializers.he_normal()``, ``KH*KW*features``) gives a quarter of it."""
    out, p, _ = abstract_init(nn.ConvTranspose2D(8, 4, 2, 1, groups=2), (-1, 6, 6, 4))
    assert out == (-1, 12, 12, 8) and p["w"].shape == (4, 4, 4, 4) and p["b"].shape == (8,)
    out, p, _ = abstract_init(nn.ConvTranspose1D(4, 3, 2, 1, 1, use_bias=False), (-1, 7, 6))
    assert out == (-1, 14, 4) and set(p) == {"w"} and p["w"].shape == (3, 4, 6)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 8, 32)), jnp.float32)
    layers = [nn.ConvTranspose2D(32, 4, 2, 1, w_init=w_init, dtype=jnp.float32)
              for w_init in (None, jax.nn.initializers.he_normal())]

    @jax.jit
    def second_moments(key, x):
        params = [layer.init(key, (-1, 8, 8, 32))[1] for layer in layers]
        return [jnp.mean(layer.apply(p, (), x)[0][:, 1:-1, 1:-1] ** 2)
                for layer, p in zip(layers, params)]

    mine, torch_fan = second_moments(jax.random.PRNGKey(2), x)
    np.testing.assert_allclose(mine, 2.0 * jnp.mean(x ** 2), rtol=0.1)
    np.testing.assert_allclose(torch_fan, mine / 4, rtol=0.1)
    text = nn.describe(nn.ConvTranspose2D(8, 4, stride=2, padding="SAME", groups=2))
    assert text.startswith("ConvTranspose2D(features=8, kernel_size=4, stride=2, "
                           "padding='SAME', output_padding=0, dilation=1, groups=2")
    assert "Total params: 264" in nn.summary(nn.ConvTranspose2D(8, 4, 2, 1, groups=2),
                                             (-1, 5, 5, 4))     # 4*4*4*4 + 8


def _unet():
    """Conv2D stride 2 down, ConvTranspose2D stride 2 up, the input concatenated as a
    skip connection, a 3x3 head."""
    down_up = nn.serial(nn.Conv2D(6, 3, stride=2, padding=1, dtype=F64), nn.ReLU(),
                        nn.ConvTranspose2D(4, 4, stride=2, padding=1, dtype=F64), nn.ReLU())
    return nn.serial(nn.FanOut(2), nn.parallel(nn.Identity, down_up), nn.FanInConcat(-1),
                     nn.Conv2D(1, 3, padding="SAME", dtype=F64))


def test_unet_decoder_gradients_equal_reference_mode_and_it_trains():
    """The model's gradient equals the one in ``ops.reference_mode()`` (autodiff of every
    twin, conv_transpose2d's included), and a few Adam steps reduce its loss."""
    model = _unet()
    out, params, state = numpy_init(model, (-1, 8, 8, 2))
    assert out == (-1, 8, 8, 1)
    x = randn((4, 8, 8, 2), seed=9)
    target = jnp.tanh(x[..., :1] - x[..., 1:])

    def loss(p):
        return ops.mean_squared_error(model.apply(p, state, x)[0], target)

    opt = optim.adam(2e-2)

    @jax.jit
    def step(p, opt_state):
        value, g = jax.value_and_grad(loss)(p)
        with ops.reference_mode():
            want = jax.grad(loss)(p)
        updates, opt_state = opt.update(g, opt_state, p)
        return optim.apply_updates(p, updates), opt_state, value, g, want

    opt_state, losses = opt.init(params), []
    for i in range(10):
        params, opt_state, value, got, want = step(params, opt_state)
        losses.append(float(value))
        if i in (0, 9):
            assert_close(got, want, 1e-10, f"U-Net grads vs reference_mode, step {i}")
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("make, exc, match", [
    (lambda: nn.ConvTranspose2D(6, 3, groups=4), ValueError,
     r"ConvTranspose2D\(6\): features 6 is not divisible by groups=4"),
    (lambda: nn.ConvTranspose2D(4, 3, stride=2, output_padding=2), ValueError,
     r"ConvTranspose2D\(4\): conv_transpose2d: output_padding \(2, 2\) must be smaller than "
     r"max\(stride, dilation\) = \(2, 2\)"),
    (lambda: nn.ConvTranspose2D(4, 3, 2, "SAME", output_padding=1), ValueError,
     r"ConvTranspose2D\(4\): conv_transpose2d: output_padding \(1, 1\) needs an int"),
    (lambda: nn.ConvTranspose2D(4, 3, padding="FULL"), ValueError,
     r"ConvTranspose2D\(4\): conv_transpose2d: padding must be 'SAME', 'VALID'"),
    (lambda: nn.ConvTranspose2D(4, 0), ValueError,
     r"ConvTranspose2D\(4\): kernel_size must be >= 1, got 0"),
    (lambda: nn.ConvTranspose1D(4, 3, output_padding=1.0), TypeError,
     r"ConvTranspose1D\(4\): output_padding must be an int, got float"),
    (lambda: nn.ConvTranspose2D(4, 3, w_init="he"), TypeError,
     r"ConvTranspose2D\(4\): w_init must be callable"),
    (lambda: nn.ConvTranspose2D(4, 3, groups=2).init(KEY, (-1, 5, 5, 3)), ValueError,
     r"ConvTranspose2D\(4\): input_shape \(-1, 5, 5, 3\): in_channels 3 is not divisible by "
     r"groups=2"),
    (lambda: nn.ConvTranspose2D(4, 1, padding=2).init(KEY, (-1, 2, 2, 3)), ValueError,
     r"ConvTranspose2D\(4\): conv_transpose2d: output size \(-2, -2\) of x \(1, 2, 2, 3\) "
     r"is below 1"),
], ids=["features-groups", "output-padding", "same-output-padding", "padding-string",
        "kernel-0", "conv1d-output-padding", "w-init", "init-in-channels", "init-output-size"])
def test_bad_arguments_and_input_shapes_raise(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("layer, p_shapes, x_shape, match", [
    (nn.ConvTranspose2D(8, 3, groups=4), ((3, 3, 2, 8), (8,)), (2, 5, 5, 6),
     r"ConvTranspose2D\(8\): conv_transpose2d: x has shape \(2, 5, 5, 6\): in_channels 6 is "
     r"not divisible by groups=4"),
    (nn.ConvTranspose2D(8, 3), ((3, 3, 8, 4), (8,)), (5, 5, 3),      # one example
     r"ConvTranspose2D\(8\): conv_transpose2d: w has shape \(3, 3, 8, 4\), expected "
     r"in_channels 3 on its last axis"),
    (nn.ConvTranspose2D(8, 3), ((3, 3, 4, 4), (8,)), (2, 5, 5, 4),
     r"ConvTranspose2D\(8\): params\['w'\] has shape \(3, 3, 4, 4\), expected \(3, 3, 8, \*\)"),
    (nn.ConvTranspose1D(4, 2, groups=2), ((2, 2, 4), (4,)), (2, 7, 6),
     r"ConvTranspose1D\(4\) \(as conv_transpose2d on \(N, 1, L, C\)\): conv_transpose2d: w has "
     r"shape \(1, 2, 2, 4\), expected in_channels 6"),
], ids=["channels", "one-example", "params", "conv1d"])
def test_params_that_do_not_fit_the_input_raise_everywhere(layer, p_shapes, x_shape, match):
    """Eagerly, under jit and in reference_mode (the twin's checks and messages)."""
    params = {"w": jnp.zeros(p_shapes[0]), "b": jnp.zeros(p_shapes[1])}
    assert_raises_everywhere(lambda p, x: layer.apply(p, (), x)[0],
                             (params, jnp.zeros(x_shape)), ValueError, match)
