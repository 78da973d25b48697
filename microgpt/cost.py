"""What a training step costs, for the warning a GPU preset gives when it starts on a CPU (cli.py).

    flops_per_step(model, tcfg)          forward + backward: 6 N + 12 L T C per token, as nanoGPT counts
    gpu_preset_warning(preset, model, tcfg)   that at this CPU's measured float32 matmul speed, in words

The estimate is a lower bound on the time: it assumes every FLOP runs at the speed of one large
matrix product, which small matrices, attention and the optimizer do not reach.
"""

import time

from microgpt.params import num_params

# a preset sized for a GPU -> the one sized for a CPU
GPU_PRESETS = {"shakespeare": "shakespeare-cpu"}


def flops_per_step(model, tcfg) -> float:
    """Every weight of a matrix product (all but the wte and wpe lookups) does a multiply-add per token
    forward and two backward (6 N), plus attention's q.k and weights.v products over the whole block
    (12 L T C, as nanoGPT counts them), times the tokens of one step."""
    tokens = tcfg.batch_size * tcfg.grad_accum * model.block_size
    multiplied = num_params(model) - (model.vocab_size + model.block_size) * model.n_embd
    return tokens * (6 * multiplied + 12 * model.n_layer * model.block_size * model.n_embd)


def matmul_flops_per_second(seconds: float = 0.3) -> float:
    """This machine's float32 speed on one 512 x 512 product, as torch runs it now."""
    import torch
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * 512 ** 3 * count / (time.perf_counter() - start)


def on_cpu(tcfg) -> bool:
    """Will the torch engine train on the CPU (no GPU found, or --device cpu)?"""
    if tcfg.engine != "torch" or tcfg.device not in ("auto", "cpu"):
        return False
    import torch
    return tcfg.device == "cpu" or not (torch.cuda.is_available() or torch.backends.mps.is_available())


def gpu_preset_warning(preset: str | None, model, tcfg) -> str | None:
    """A warning when a GPU preset is about to train on a CPU, with the time per step to expect."""
    if preset not in GPU_PRESETS or not on_cpu(tcfg):
        return None
    flops, speed = flops_per_step(model, tcfg), matmul_flops_per_second()
    step = flops / speed
    return (f"warning: the {preset} preset is sized for a GPU, and this run is on the CPU: expect at least "
            f"{step:.1f} s per step ({flops / 1e12:.2f} TFLOP per step at this CPU's measured "
            f"{speed / 1e9:.0f} GFLOP/s), so {tcfg.steps} steps take {step * tcfg.steps / 3600:.1f} hours or more; "
            f"--preset {GPU_PRESETS[preset]} is sized for a CPU")
