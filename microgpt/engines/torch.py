"""The torch engine: the same GPT as atomic.py, as a PyTorch module, batched, on CPU or GPU.

    microgpt train --engine torch [--dtype float64|float32|bfloat16] [--device auto|cpu|cuda|mps] [--compile]
    torchrun --standalone --nproc_per_node=2 -m microgpt train --engine torch ...   (data-parallel)

Parameters keep params.py's names, shapes and init, so checkpoints move freely between engines; in
float64 on CPU this engine reproduces the scalar engine's losses and gradients to round-off
(tests/test_torch_engine.py). The fused pieces torch offers compute the same functions as the
reference: F.scaled_dot_product_attention with a causal mask is softmax(q.k / sqrt(head_dim)) over
the positions so far, F.rms_norm without a weight is x * (mean(x^2) + eps)^-0.5, and
torch.optim.AdamW with weight_decay 0 is the reference Adam, p -= lr * m_hat / (sqrt(v_hat) + eps).

A batch of documents of different lengths is packed: several documents share a row of the batch,
each with its own positions (0, 1, ...) and an attention mask that lets a token see only the earlier
tokens of its own document. That is the same function as one row per document, without computing
on padding (names average 7 tokens in a block of 16). What is left of a row is padding, whose
targets (-1) are left out of the loss: the sum over real tokens, divided by their count.

Under torchrun (WORLD_SIZE > 1) each process trains on its own sequences; DistributedDataParallel
averages gradients over processes, so each process scales its loss sum by world / (tokens of all
processes): the average is then d(mean loss over every token of the global batch)/d(param), the
same as one process with the whole batch, however unevenly the tokens fall across processes.
"""

import atexit
import contextlib
import copy
import ctypes
import os

from microgpt.engines import base

base.check_thread_count("OMP_NUM_THREADS")  # before torch and its OpenMP read it

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from microgpt.engines.muon import LR_SCALE as MUON_LR_SCALE  # noqa: E402
from microgpt.engines.muon import Muon  # noqa: E402
from microgpt.errors import UsageError  # noqa: E402
from microgpt.params import num_params, param_shapes  # noqa: E402
from microgpt.tensor import Tensor  # noqa: E402

RMS_EPS = 1e-5
_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.float32}  # bf16: autocast
_SAFETENSORS = {torch.float64: "F64", torch.float32: "F32"}
_TORCH = {"F64": torch.float64, "F32": torch.float32}


def rmsnorm(x):
    return F.rms_norm(x, (x.size(-1),), eps=RMS_EPS)  # x * (mean(x^2) + 1e-5)^-0.5, no gain


# ---- the model ---------------------------------------------------------------------------------
class Dropout(nn.Dropout):
    """nn.Dropout: each element zeroed with probability p, the rest scaled by 1 / (1 - p). On CPU the
    mask is uniform draws compared with p, which timed faster there than nn.Dropout's bernoulli_ on the
    names preset's activations (it runs 9 times a step)."""

    def forward(self, x):
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)  # GPUs: one fused kernel
        keep = torch.rand_like(x) >= self.p  # like x: True with probability 1 - p
        return x * (keep.to(x.dtype) / (1 - self.p))


class Block(nn.Module):
    """One transformer layer: attention, then the MLP, each on the rmsnorm of the residual stream.
    Its parameters (attn_wq, attn_wk, attn_wv, attn_wo, mlp_fc1, mlp_fc2) are registered by GPT under
    params.py's names, so that the module's state_dict() keys are the checkpoint's."""

    def __init__(self, n_head: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.n_head, self.attn_dropout = n_head, attn_dropout
        self.resid_drop, self.mlp_drop = Dropout(dropout), Dropout(dropout)

    def attention(self, x, mask=None, cache=None):
        B, T, C = x.shape
        heads = lambda t: t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q, k, v = (heads(F.linear(x, w)) for w in (self.attn_wq, self.attn_wk, self.attn_wv))  # (B, nh, T, hs)
        if cache is not None:  # sampling: the new positions attend to every cached one and to each other
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)  # (B, nh, t, hs)
            cache[:] = [k, v]
        dropout = self.attn_dropout if self.training else 0.0  # on the attention weights
        # causal among the positions given; packed rows bring their own mask; one new position sees the whole cache
        causal = mask is None and (cache is None or k.size(2) == T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): the heads side by side again
        return self.resid_drop(F.linear(y, self.attn_wo))  # (B, T, C)

    def forward(self, x, mask=None, cache=None):
        x = x + self.attention(rmsnorm(x), mask, cache)  # (B, T, C)
        hidden = F.relu(F.linear(rmsnorm(x), self.mlp_fc1))  # (B, T, 4C)
        return x + self.mlp_drop(F.linear(hidden, self.mlp_fc2))  # (B, T, C)


class GPT(nn.Module):
    """atomic.py's GPT as a module whose parameters carry params.py's names: state_dict() has the keys
    wte, wpe, lm_head, layer0.attn_wq, ..., exactly the tensors of a checkpoint or an export, so
    `GPT(cfg).load_state_dict(safetensors.torch.load_file(path))` loads one (README, "Export").
    The weights start at zero; the engine (or load_state_dict) fills them."""

    def __init__(self, cfg, dropout: float = 0.0, attn_dropout: float | None = None):
        super().__init__()
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.cfg = cfg
        for i in range(cfg.n_layer):
            self.add_module(f"layer{i}", Block(cfg.n_head, dropout, attn_dropout))
        self.layers = [getattr(self, f"layer{i}") for i in range(cfg.n_layer)]
        for name, shape in param_shapes(cfg):  # "layer0.attn_wq" -> parameter attn_wq of module layer0
            owner, _, leaf = name.rpartition(".")
            (getattr(self, owner) if owner else self).register_parameter(leaf, nn.Parameter(torch.zeros(shape)))
        self.drop = Dropout(dropout)

    def forward(self, idx, targets=None, pos=None, mask=None, caches=None, start_pos: int = 0):
        """Logits (B, T, vocab); given targets (B, T), -1 marking padding: the sum of their losses.

        Packed rows give each token's position `pos` (B, T) and the attention `mask` (B, 1, T, T);
        without them the row is one sequence from start_pos on, with a causal mask."""
        B, T = idx.shape
        if pos is None:
            pos = torch.arange(start_pos, start_pos + T, device=idx.device)  # (T,)
        x = self.drop(rmsnorm(F.embedding(idx, self.wte) + F.embedding(pos, self.wpe)))  # (B, T, C)
        for i, block in enumerate(self.layers):
            x = block(x, mask, None if caches is None else caches[i])  # (B, T, C)
        logits = F.linear(x, self.lm_head)  # (B, T, vocab)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-1, reduction="sum")

    # ---- sampling, the interface of engines/base.py, so that sample.generate drives the module itself ----
    def new_cache(self):
        return [[] for _ in self.layers]  # per layer: [keys, values], each (1, nh, t, hs)

    @torch.no_grad()
    def forward_logits(self, cache, token_ids: list[int], start_pos: int = 0) -> list[list[float]]:
        """The logits at each of these positions, in one forward pass; appends them all to the cache.
        (Dropout follows the module's mode: call .eval() first.)"""
        idx = torch.tensor([token_ids], device=self.wte.device)  # (1, T)
        return self(idx, caches=cache, start_pos=start_pos)[0].double().tolist()  # (T, vocab)

    def logits(self, cache, token_id: int, pos_id: int) -> list[float]:
        return self.forward_logits(cache, [token_id], pos_id)[0]


# ---- batches -----------------------------------------------------------------------------------
def pack(seqs: list[list[int]], width: int) -> dict:
    """Documents of different lengths, several to a row: idx, targets, pos (R, T), mask (R, 1, T, T).

    Each sequence gives len - 1 (input, target) pairs. Longest first, each goes into the first row
    with room; a row is T = max(width, the longest) wide (the engine passes the block size). A token
    attends to itself and the earlier tokens of its own document; the padding at a row's end forms
    one more segment, so no row of the mask is empty."""
    T = max(width, max(len(s) for s in seqs) - 1)
    rows: list[list[list[int]]] = []  # the sequences placed in each row
    room: list[int] = []
    for s in sorted(seqs, key=len, reverse=True):
        r = next((r for r, free in enumerate(room) if free >= len(s) - 1), None)
        if r is None:  # no row has room: start a new one
            rows.append([])
            room.append(T)
            r = len(rows) - 1
        rows[r].append(s)
        room[r] -= len(s) - 1
    idx, targets, pos, segment = [], [], [], []  # each a list of R rows of T
    for placed, pad in zip(rows, room):  # what room is left in a row is its padding
        idx.append([t for s in placed for t in s[:-1]] + [0] * pad)
        targets.append([t for s in placed for t in s[1:]] + [-1] * pad)  # -1 = padding
        pos.append([p for s in placed for p in range(len(s) - 1)] + [0] * pad)  # position within the document
        segment.append([i for i, s in enumerate(placed) for _ in s[1:]] + [-1] * pad)  # which document
    idx, targets, pos, segment = (torch.tensor(x, dtype=torch.long) for x in (idx, targets, pos, segment))  # (R, T)
    causal = torch.ones((T, T), dtype=torch.bool).tril()  # (T, T)
    mask = (segment[:, :, None] == segment[:, None, :]) & causal  # (R, T, T)
    return {"idx": idx, "targets": targets, "pos": pos, "mask": mask[:, None]}  # mask (R, 1, T, T)


# ---- tensors in and out ------------------------------------------------------------------------
def to_torch(t: Tensor, dtype, device) -> torch.Tensor:
    flat = torch.frombuffer(bytearray(t.data), dtype=_TORCH[t.dtype])  # little-endian bytes, as written
    return flat.reshape(t.shape).to(device=device, dtype=dtype)


def from_torch(x: torch.Tensor) -> Tensor:
    x = x.detach().to("cpu").contiguous()
    raw = ctypes.string_at(x.data_ptr(), x.numel() * x.element_size())  # raw little-endian bytes
    return Tensor(tuple(x.shape), _SAFETENSORS[x.dtype], raw)


def pick_device(name: str) -> str:
    local_rank = base.local_rank()
    if name == "auto":
        if torch.cuda.is_available():
            return f"cuda:{local_rank}"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and torch.cuda.is_available():
        return f"cuda:{local_rank}"  # one GPU per process under torchrun
    try:
        torch.empty(0, device=name)
    except (RuntimeError, AssertionError):
        raise UsageError(f"--device {name} is not available here; use --device auto (picks cuda, mps or cpu)") from None
    return name


def init_distributed(device: str) -> tuple[int, int]:
    """Join torchrun's process group when WORLD_SIZE > 1: NCCL between GPUs, gloo on CPU."""
    if base.rank_and_world()[1] == 1:
        return 0, 1
    if not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        atexit.register(leave_process_group)   # after an error; a finished run leaves in Engine.leave_processes
    return dist.get_rank(), dist.get_world_size()


def leave_process_group() -> None:
    """destroy_process_group, once (a second call fails)."""
    if dist.is_initialized():
        dist.destroy_process_group()


# Below this many parameters a CPU step is too short to share among threads: the default model (4,192)
# took 1.10 ms/step on 1 thread and 12.1 ms on 2 on a busy 2-core machine (README, "The PyTorch engine").
SMALL_MODEL = 100_000


def choose_threads(requested: int, n_params: int) -> tuple[int, str]:
    """torch's CPU threads and why, in words: --threads if given (at most the cores here: a checkpoint keeps
    the count it was trained with, and threads past the cores wait on each other), else OMP_NUM_THREADS if
    set (torchrun sets 1 per process), else 1 for a small model, else the cores the machine's load leaves idle."""
    cores = base.cores()
    if requested > cores:
        return cores, f"--threads {requested}, but {cores} cores here"
    if requested:
        return requested, "--threads"
    if (os.environ.get("OMP_NUM_THREADS") or "").strip():
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    if n_params < SMALL_MODEL:
        return 1, f"a model under {SMALL_MODEL:,} parameters; --threads N to choose"
    return base.idle_cores()


def openmp_nesting_off() -> None:
    """Nested OpenMP regions off, OpenMP's default, which torch's CPU threads expect. Numba's OpenMP threads
    (the compiled engine, earlier in the same process, as in `microgpt bench`) turn nesting on in the libgomp
    both may share, and then the regions opened inside torch's (by its math libraries, presumably) each start a
    team of new threads: a two-thread step of the shakespeare-cpu preset's model took 1.8 s instead of 45 ms.
    Only a libgomp that is already loaded is touched (torch's own copy, where it has one, was never shared)."""
    try:
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
    except (OSError, AttributeError):   # not loaded, or no RTLD_NOLOAD (not Linux)
        return
    gomp.omp_set_max_active_levels(1)


# ---- the engine --------------------------------------------------------------------------------
class Engine(base.Engine):
    name = "torch"

    def __init__(self, model_cfg, train_cfg, params: dict[str, Tensor]):
        t = self.tcfg = train_cfg
        self.cfg = model_cfg
        self.device = pick_device(t.device)
        self.device_type = self.device.split(":")[0]
        if t.dtype == "float64" and self.device_type == "mps":
            raise UsageError("MPS has no float64; use --dtype float32 on --device mps")
        self.dtype = _DTYPES[t.dtype]
        self.autocast = t.dtype == "bfloat16"
        if self.autocast and self.device_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # what is left in float32 may use TF32 too
            torch.backends.cudnn.allow_tf32 = True
        self.rank, self.world = init_distributed(self.device)
        self.threads, why = choose_threads(t.threads, num_params(model_cfg))
        torch.set_num_threads(self.threads)
        openmp_nesting_off()
        self.note = f"torch: {self.threads} CPU thread{'s' if self.threads > 1 else ''} ({why})"
        self.sum_dtype = torch.float32 if self.device_type == "mps" else torch.float64  # for loss and token sums

        self.model = GPT(model_cfg, t.dropout, t.attn_dropout).to(device=self.device, dtype=self.dtype)
        self.shapes = param_shapes(model_cfg)
        self.params = dict(self.model.named_parameters())  # params.py's names, in its order
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(to_torch(params[name], self.dtype, self.device))

        self.eval_model = self.model  # what is evaluated, sampled and saved as the model
        if t.ema:  # an exponential moving average of the trained weights, updated after each step
            self.eval_model = copy.deepcopy(self.model).requires_grad_(False)
            self.averaged = dict(self.eval_model.named_parameters())

        self.train_model = torch.compile(self.model) if t.compile else self.model
        if self.world > 1:
            self.train_model = DistributedDataParallel(
                self.train_model, device_ids=[torch.device(self.device).index] if self.device_type == "cuda" else None)
        # --optimizer muon: Muon for the blocks' matrices, AdamW for the embeddings and lm_head
        self.muon = Muon({n: p for n, p in self.params.items() if n.startswith("layer")}, t.weight_decay) \
            if t.optimizer == "muon" else None
        self.adam_params = {n: p for n, p in self.params.items() if self.muon is None or n not in self.muon.params}
        fused = {"fused": True} if self.device_type in ("cuda", "cpu") else {"foreach": True}
        self.opt = torch.optim.AdamW(list(self.adam_params.values()), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps,
                                     weight_decay=t.weight_decay, **fused)
        zeros = lambda: {n: torch.zeros_like(p) for n, p in self.adam_params.items()}
        self._set_moments(zeros(), zeros())

    # ---- batches -------------------------------------------------------------------------------
    def _tensors(self, seqs) -> dict:
        """The model's inputs for a batch: idx and targets (B, T), and for packed rows pos and mask."""
        if len({len(s) for s in seqs}) == 1:  # windows of a stream: one per row, causal, no padding
            both = torch.tensor(seqs)  # (B, T + 1)
            batch = {"idx": both[:, :-1], "targets": both[:, 1:]}  # (B, T) each
        else:
            batch = pack(seqs, self.cfg.block_size)
        if self.device_type == "cuda":  # copy through pinned memory, without waiting for the GPU
            return {k: t.pin_memory().to(self.device, non_blocking=True) for k, t in batch.items()}
        return {k: t.to(self.device) for k, t in batch.items()}

    def _autocast(self):
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)

    def _loss_sum(self, model, seqs):
        with self._autocast():
            return model(**self._tensors(seqs))

    # ---- the interface -------------------------------------------------------------------------
    def train_step(self, seqs, step: int, lr: float) -> float:
        t = self.tcfg
        self.train_model.train()
        if t.dropout > 0:  # the dropout masks depend on (seed, step, rank) only, so resuming is exact
            torch.manual_seed((t.seed * 1_000_003 + step) * 4096 + self.rank)
        tokens = torch.tensor(float(sum(len(s) - 1 for s in seqs)), dtype=self.sum_dtype, device=self.device)
        if self.world > 1:
            dist.all_reduce(tokens)  # every process's tokens: the mean is over the global batch
        size = -(-len(seqs) // t.grad_accum)  # gradient accumulation: micro-batches one after another
        micro = [seqs[i:i + size] for i in range(0, len(seqs), size)]
        total = torch.zeros((), dtype=self.sum_dtype, device=self.device)
        for i, mseqs in enumerate(micro):
            last = i == len(micro) - 1
            sync = contextlib.nullcontext() if (last or self.world == 1) else self.train_model.no_sync()
            with sync:
                loss_sum = self._loss_sum(self.train_model, mseqs)
                (loss_sum * (self.world / tokens).to(loss_sum.dtype)).backward()  # DDP averages over world
            total += loss_sum.detach().to(self.sum_dtype)
        if self.world > 1:
            dist.all_reduce(total)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params.values(), t.grad_clip)
        for group in self.opt.param_groups:
            group["lr"] = lr
        for state in self.opt.state.values():
            state["step"].fill_(step)  # AdamW adds 1: bias correction uses step + 1, as atomic.py
        self.opt.step()
        if self.muon is not None:
            self.muon.step(lr * MUON_LR_SCALE)
        self.model.zero_grad(set_to_none=True)
        if t.ema:
            with torch.no_grad():  # avg = ema * avg + (1 - ema) * p, every parameter in one call
                torch._foreach_lerp_(list(self.averaged.values()), list(self.params.values()), 1 - t.ema)
        return (total / tokens).item()

    def largest_over_processes(self, value: int) -> int:
        if self.world == 1:
            return value
        agreed = torch.tensor(value, dtype=torch.int64, device=self.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        return int(agreed.item())

    def leave_processes(self) -> None:
        # Together: a process that left while rank 0 was still sampling and saving was, about once in 80 runs
        # on a busy CPU, aborted by gloo in its exit ("terminate called without an active exception").
        if self.world == 1:
            return
        if self.device.startswith("cuda"):   # NCCL's barrier is told this process's GPU, as its docs ask
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()
        leave_process_group()

    @torch.no_grad()
    def eval_loss(self, seqs) -> float:
        self.eval_model.eval()
        loss_sum = self._loss_sum(self.eval_model, seqs)
        return loss_sum.item() / sum(len(s) - 1 for s in seqs)

    def loss_and_grads(self, seqs):
        self.model.train()
        loss_sum = self._loss_sum(self.model, seqs)
        n = sum(len(s) - 1 for s in seqs)
        (loss_sum / n).backward()
        grads = {name: from_torch(p.grad) for name, p in self.params.items()}
        self.model.zero_grad(set_to_none=True)
        return loss_sum.item() / n, grads

    def weights(self) -> dict[str, Tensor]:
        """The model: with --ema the moving average, else the trained weights."""
        model = self.averaged if self.tcfg.ema else self.params
        return {n: from_torch(model[n]) for n in self.params}  # params.py's order

    def state(self) -> dict[str, Tensor]:
        """adam.m/adam.v for what AdamW trains, muon.momentum for what Muon trains, and with --ema the
        trained weights as ema.trained (weights() gives their average)."""
        opt = self.opt.state
        out = base.adam_state({n: from_torch(opt[p]["exp_avg"]) for n, p in self.adam_params.items()},
                              {n: from_torch(opt[p]["exp_avg_sq"]) for n, p in self.adam_params.items()})
        if self.muon is not None:
            out.update({f"muon.momentum.{n}": from_torch(buf) for n, buf in self.muon.momentum.items()})
        if self.tcfg.ema:
            out.update({f"ema.trained.{n}": from_torch(p) for n, p in self.params.items()})
        return out

    def load_state(self, state: dict[str, Tensor]) -> None:
        as_torch = lambda d: {n: to_torch(t, self.dtype, self.device) for n, t in d.items()}
        self._set_moments(as_torch(base.take(state, "adam.m.", self.adam_params)),
                          as_torch(base.take(state, "adam.v.", self.adam_params)))
        if self.muon is not None:
            with torch.no_grad():
                for n, t in as_torch(base.take(state, "muon.momentum.", self.muon.momentum)).items():
                    self.muon.momentum[n].copy_(t)
        if self.tcfg.ema:
            with torch.no_grad():
                for n, t in as_torch(base.take(state, "ema.trained.", self.params)).items():
                    self.params[n].copy_(t)

    def _set_moments(self, m: dict, v: dict) -> None:
        """Adam's state through the optimizer's own load_state_dict (it places `step` as fused Adam wants)."""
        state = {i: {"step": torch.tensor(0.0), "exp_avg": m[n].clone(), "exp_avg_sq": v[n].clone()}
                 for i, n in enumerate(self.adam_params)}  # own copies: the optimizer updates them in place
        self.opt.load_state_dict({"state": state, "param_groups": self.opt.state_dict()["param_groups"]})

    # ---- sampling ------------------------------------------------------------------------------
    def new_cache(self):
        return self.eval_model.new_cache()

    def forward_logits(self, cache, token_ids: list[int], start_pos: int = 0) -> list[list[float]]:
        self.eval_model.eval()
        with self._autocast():
            return self.eval_model.forward_logits(cache, token_ids, start_pos)

    def logits(self, cache, token_id: int, pos_id: int) -> list[float]:
        return self.forward_logits(cache, [token_id], pos_id)[0]
