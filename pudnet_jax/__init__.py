"""pudnet_jax: PudNet, a hypernetwork that generates the convolution kernels of a ConvNet
for an unseen image dataset in one forward pass (BatchNorm statistics are computed from
that dataset; BatchNorm scale and bias are learned once and shared), in JAX/Flax.

    import pudnet_jax
    hyper = pudnet_jax.load_pretrained('mnist-convnet3')   # or pudnet_jax.load('runs/default')
    net, variables = hyper.predict(images)                 # uint8 or [-1, 1] float images
    features = net.apply(variables, pudnet_jax.normalize(images), train=False)

Importing the package changes no process-wide setting (the command line, `python -m
pudnet_jax`, selects JAX's CPU backend when there is no GPU and quiets TensorFlow) and
imports nothing heavy until an attribute below is used.
"""

__version__ = '0.1.0'

# The Python API (pudnet_jax/api.py), imported on first use.
_API = ('Hypernetwork', 'load', 'load_pretrained', 'load_network', 'pretrained_names',
        'normalize')
__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        from pudnet_jax import api
        return getattr(api, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(list(globals()) + list(_API))
