"""A network of your own: the paper's CNN (section 5) at any width, as a plain flax module.

  python -m experiments.main --config=experiments/configs/mnist.py:cpu_all_data_max_entropy \
      --config.model.architecture=examples.wide_cnn:WideCNN --config.model.kwargs='{"width": 32}' --workdir=/tmp/wide

The contract: `__call__(x, deterministic)` returns logits [N, num_classes]; dropout is on when deterministic is
False (layers.HashDropout, or flax's nn.Dropout on one process); the runner passes num_classes and model.kwargs.
`layers.Conv3x3` and `layers.MAX_POOL_2X2` are nn.Conv((3, 3), "SAME") and 2x2 max-pooling with gradients tuned
for the CPU (XLA's convolution gradients are far slower there); nn.Conv works too.
"""

import flax.linen as nn

from deepbass_jax.layers import MAX_POOL_2X2, Conv3x3, HashDropout, resolve_kernels


class WideCNN(nn.Module):
    num_classes: int
    width: int = 32  # the paper's CNN has 16 channels
    dropout_rate: float = 0.33
    row_offset: int = 0  # set by runs over several processes: this slice's first row in the batch

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        kernels = resolve_kernels("auto")  # CPU-tuned gradients on a CPU, XLA's elsewhere
        for block in range(4):
            x = Conv3x3(self.width, kernel_init=nn.initializers.glorot_uniform(), kernels=kernels)(x)
            x = nn.leaky_relu(x, 0.1)
            x = HashDropout(self.dropout_rate, self.row_offset)(x, deterministic=deterministic)
            if block in (1, 3):
                x = MAX_POOL_2X2[kernels](x)
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.glorot_uniform())(x.reshape(x.shape[0], -1))
