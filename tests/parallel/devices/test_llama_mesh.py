"""The README's Llama-style decoder (grouped-query attention, rotary embeddings,
TiedEmbedding) trained with ``fit(mesh=...)`` on 8 devices equals one-device training
(float64, 1e-10), ``evaluate(mesh=...)`` too, and the ``decode=True`` model generates
from the mesh run's replicated params, also with the batch and the key/value cache split
over the devices."""
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from funcnet import optim, parallel, train
from funcnet.gradcheck import assert_close
from tests.nn.test_llama_audit import KEY, L, V, empty_state, generator, models

RTOL = 1e-10


def test_llama_fit_on_a_mesh_then_generate():
    model, dec, params, state, _ = models()
    rng = np.random.default_rng(1)
    x = rng.integers(0, V, (32, L)).astype(np.int32)
    y = (x + 1) % V
    fit = dict(batch_size=16, key=KEY, scan=True, progress=False)
    mesh = parallel.make_mesh()
    single = train.fit(model, params, state, optim.adam(1e-2), (x, y), 1, **fit)
    multi = train.fit(model, params, state, optim.adam(1e-2), (x, y), 1, mesh=mesh, **fit)
    assert all(leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
               for leaf in jax.tree_util.tree_leaves(multi[0]))
    assert_close(parallel.to_host(multi[:3]), single[:3], RTOL, "fit mesh llama")
    ev = train.evaluate(model, *multi[:2], x, y, batch_size=16, mesh=mesh)
    ev1 = train.evaluate(model, *single[:2], x, y, batch_size=16)
    np.testing.assert_allclose([ev["loss"], ev["accuracy"]], [ev1["loss"], ev1["accuracy"]],
                               rtol=RTOL)
    # generation from the mesh run's replicated params, 8 prompts and their cache split
    # over the devices, equals generation from the one-device run on one device
    generate = generator(dec)
    prompt = x[:8, :2]
    want = generate(single[0], empty_state(dec, (8, L)), prompt)
    axis = mesh.axis_names[0]

    def on_mesh(a):         # Repeat's k/v (layers, N, L, K, dh): N split; indices replicated
        spec = PartitionSpec(None, axis) if a.ndim == 5 else PartitionSpec()
        return jax.device_put(a, NamedSharding(mesh, spec))
    cache = jax.tree_util.tree_map(on_mesh, empty_state(dec, (8, L)))
    prompt = jax.device_put(prompt, NamedSharding(mesh, PartitionSpec(axis)))
    toks = generate(multi[0], cache, prompt)
    assert toks.sharding.device_set == set(jax.devices())
    np.testing.assert_array_equal(toks, want)
