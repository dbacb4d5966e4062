"""tests/parallel/devices/ needs 8 devices: it runs in a subprocess with 8 fake CPU devices
(``test_fake_devices.py``), or directly on a machine with >= 8 devices (a TPU)."""
import jax

collect_ignore = [] if jax.device_count() >= 8 else ["devices"]
