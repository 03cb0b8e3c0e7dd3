"""Quality objectives, each labelled for what it is: capacity counts, zero-cost proxies, or short training.

None of the proxies is accuracy (docs/search.md#quality-objectives): parameter count is a hard baseline for
transformers; synflow and jacob_cov transfer from CNN benchmarks with Spearman ~0.7 there and unknown correlation on
ViTs; DSS is TF-TAS's ViT proxy. `effscope calibrate` measures each one's Kendall tau against short training on the
user's data. The labels below travel into the study and every table, so a proxy front is never called an accuracy front.

The computing functions run in a spawned process (`QualityProcess`), never in the sampler's process.

Definitions, as implemented (reimplemented from the papers' descriptions):

- params, macs: from the measurement's Record (fvcore, batch 1); more capacity counts as better.
- synflow (Tanaka et al. 2020): every parameter replaced by its absolute value, the network run in float64, R = sum of
  the outputs, score = sum over the layers' weights (every module's `weight` of 2 or more dimensions: Linear, Conv,
  the deformable conv) of |theta * dR/dtheta|, as zero-cost-nas scores it. The paper feeds an all-ones input; on a
  transformer an all-ones input makes every LayerNorm output zero and the score collapses, so effscope feeds the proxy
  batch instead. With that batch, LayerNorm and GELU, the products take both signs: a signed sum (revision 1) gave
  LITv2 designs scores of either sign, so the sign decided the ranking.
- jacob_cov (Mellor et al. 2021): J = d(sum of outputs)/d(input) per example of the batch (eval mode, so examples
  do not interact), C = correlation matrix of the rows of J, score = -sum_i (log(l_i + k) + 1 / (l_i + k)) over
  the eigenvalues l_i of C, k = 1e-5.
- dss (TF-TAS, Zhou et al. 2022): gradients of a loss L (cross-entropy on labelled data, else the sum of the
  outputs); synaptic diversity = sum over the Linear/Conv weights inside attention modules of the nuclear norm of
  |theta * dL/dtheta|, synaptic saliency = sum over the weights inside MLP/FFN modules of |theta * dL/dtheta|;
  score = diversity + saliency. Modules are classified by the first `attn`/`attention` or `mlp`/`ffn`/`ff` in
  their path; weights outside both (embeddings, heads, merges) do not count.
- train: N steps of AdamW at a fixed seed on the ImageFolder's training split, then top-1 (%) on its validation
  split. A short-training number, not converged accuracy.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from effscope.errors import EffscopeError

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection

    import torch
    from torch import nn

    from effscope.search.imagefolder import ImageFolder

__all__ = ["OBJECTIVES", "QualityError", "QualityObjective", "QualityProcess", "evaluate", "label_for"]


@dataclass(frozen=True)
class QualityObjective:
    """A quality objective: its name, honest label, natural direction and where its value comes from."""

    name: str
    label: str
    direction: str
    is_proxy: bool
    source: str  # "record": read from the measurement; "compute": computed in the quality process
    summary: str
    # Raised when the definition changes: a study or a calibration never mixes values of two definitions.
    revision: int = 1


OBJECTIVES: dict[str, QualityObjective] = {
    o.name: o
    for o in (
        QualityObjective(
            "params", "parameters (capacity proxy, not accuracy)", "maximize", True, "record", "parameter count"
        ),
        QualityObjective(
            "macs", "MACs (fvcore; capacity proxy, not accuracy)", "maximize", True, "record", "multiply-accumulates"
        ),
        QualityObjective(
            "dss",
            "DSS (TF-TAS zero-cost proxy, not accuracy)",
            "maximize",
            True,
            "compute",
            "synaptic diversity of attention + saliency of MLP weights at init",
        ),
        QualityObjective(
            "synflow",
            "synflow (zero-cost proxy, not accuracy)",
            "maximize",
            True,
            "compute",
            "synaptic flow at init (|theta|, float64, proxy batch; sum of |theta * dR/dtheta| over layer weights)",
            revision=2,
        ),
        QualityObjective(
            "jacob_cov",
            "jacob_cov (zero-cost proxy, not accuracy)",
            "maximize",
            True,
            "compute",
            "input-Jacobian correlation at init",
        ),
        QualityObjective(
            "train",
            "short-training val top-1 (%, not converged accuracy)",
            "maximize",
            False,
            "compute",
            "N steps of AdamW on an ImageFolder, then validation top-1",
        ),
    )
}
PROXIES = ("params", "macs", "dss", "synflow", "jacob_cov")


def label_for(name: str, train: dict[str, Any] | None = None) -> str:
    """The label a table or report shows for this objective (training names its step count)."""
    if name == "train" and train:
        return f"short-training val top-1 (%, {train['steps']} steps, not converged accuracy)"
    return OBJECTIVES[name].label


class QualityError(EffscopeError):
    """A quality value could not be computed for a design (the reason is one sentence)."""


# --------------------------------------------------------------------------------------------------- inputs


def _module_and_inputs(
    target_name: str, knobs: dict[str, Any], workload: dict[str, Any], batch: int, data: ImageFolder | None, seed: int
):
    """Build the design on the workload's device and make its inputs: a real image batch when `data` is given."""
    import torch

    from effscope.profile.target import resolve_target

    device = torch.device(workload["device"])
    size = tuple(workload["size"]) if workload.get("size") else None
    torch.manual_seed(seed)
    target = resolve_target(target_name, knobs)
    module = target.build(device)
    args = list(target.example_args(module, batch, size, device))
    labels = None
    if data is not None and target.kind == "model":
        folder = data
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(folder.train), generator=g)[:batch].tolist()
        samples = [folder.train[i] for i in idx]
        h, w = args[0].shape[-2:]
        args[0] = folder.load(samples, (h, w)).to(device)
        labels = folder.labels(samples).to(device)
    return target, module, args, labels


def _first_float(args: list) -> int:
    import torch

    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return i
    raise QualityError("the design takes no floating-point input to differentiate")


def _outputs(y: torch.Tensor | list | tuple | dict) -> torch.Tensor:
    import torch

    if isinstance(y, torch.Tensor):
        return y
    parts = [t for t in (y if isinstance(y, list | tuple) else y.values()) if isinstance(t, torch.Tensor)]
    return torch.cat([t.reshape(-1) for t in parts])


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise QualityError(f"{name} is not finite for this design ({value})")
    return float(value)


# --------------------------------------------------------------------------------------------------- proxies


def synflow(module: nn.Module, args: list) -> float:
    """Synaptic flow with |theta| in float64 on the proxy batch (see the module docstring)."""
    import torch

    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.abs_()
    args = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    module.zero_grad(set_to_none=True)
    _outputs(module(*args)).sum().backward()
    # layers' weights: Linear, Conv and the deformable conv; not the 1-D weights of norms, nor biases and embeddings
    weights = [w for m in module.modules() if isinstance(w := getattr(m, "weight", None), torch.Tensor) and w.ndim >= 2]
    score = sum(float((w.detach() * w.grad).abs().sum()) for w in weights if w.grad is not None)
    return _finite("synflow", score)


def jacob_cov(module: nn.Module, args: list) -> float:
    """Score of the correlation of input Jacobians across the batch (higher: inputs told apart at init)."""
    import torch

    module = module.eval()
    i = _first_float(args)
    x = args[i].detach().clone().requires_grad_(True)
    args = [*args[:i], x, *args[i + 1 :]]
    _outputs(module(*args)).sum().backward()
    jac = x.grad.reshape(x.shape[0], -1).double()
    if jac.shape[0] < 2:
        raise QualityError("jacob_cov needs a proxy batch of at least 2 inputs")
    corr = torch.corrcoef(jac)
    if not torch.isfinite(corr).all():
        raise QualityError("jacob_cov is undefined here: an input's Jacobian is constant")
    eig = torch.linalg.eigvalsh(corr)
    k = 1e-5
    return _finite("jacob_cov", float(-(torch.log(eig + k) + 1.0 / (eig + k)).sum()))


def _kind_of(path: str) -> str | None:
    for part in path.split("."):
        low = part.lower()
        if low in ("attn", "attention") or low.endswith("attn"):
            return "msa"
        if low in ("mlp", "ffn", "ff"):
            return "mlp"
    return None


def dss(module: nn.Module, args: list, labels: torch.Tensor | None) -> float:
    """TF-TAS's DSS: nuclear norms over attention weights + absolute saliency over MLP weights."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    module = module.eval()
    module.zero_grad(set_to_none=True)
    y = module(*args)
    loss = F.cross_entropy(y, labels) if labels is not None and isinstance(y, torch.Tensor) else _outputs(y).sum()
    loss.backward()
    diversity = saliency = 0.0
    counted = 0
    for name, m in module.named_modules():
        if not isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d) or m.weight.grad is None:
            continue
        kind = _kind_of(name)
        if kind is None:
            continue
        s = (m.weight * m.weight.grad).detach().abs()
        if kind == "msa":
            diversity += float(torch.linalg.matrix_norm(s.reshape(s.shape[0], -1).double(), ord="nuc"))
        else:
            saliency += float(s.double().sum())
        counted += 1
    if counted == 0:
        raise QualityError("DSS found no attention or MLP weights in this design")
    return _finite("dss", diversity + saliency)


# --------------------------------------------------------------------------------------------------- training


def short_train(
    target_name: str, knobs: dict[str, Any], workload: dict[str, Any], train: dict[str, Any], folder: ImageFolder
) -> float:
    """Train `train['steps']` AdamW steps at a fixed seed; return validation top-1 in percent."""
    import contextlib
    import dataclasses

    import torch
    import torch.nn.functional as F

    from effscope.profile.target import resolve_target

    device = torch.device(workload["device"])
    target = resolve_target(target_name, knobs)
    if target.kind != "model":
        raise QualityError(f"'{target_name}' is a block; short training needs a model with a classifier")
    config = target.config
    if getattr(config, "num_classes", None) != len(folder.classes):
        config = dataclasses.replace(config, num_classes=len(folder.classes))
        target = dataclasses.replace(target, config=config)
    size = tuple(workload["size"]) if workload.get("size") else target.factory.module.default_size
    seed = int(train["seed"])
    torch.manual_seed(seed)
    model = target.build(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(workload.get("dtype", "fp32"))
    scaler = torch.amp.GradScaler(device.type) if amp_dtype is torch.float16 else None

    def amp():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    cache: dict[str, torch.Tensor] = {}  # decoded images, reused across epochs

    def batch_of(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        samples = [folder.train[i] for i in indices]
        missing = [s for s in samples if s[0] not in cache]
        if missing:
            for s, img in zip(missing, folder.load(missing, size), strict=True):
                cache[s[0]] = img
        x = torch.stack([cache[s[0]] for s in samples])
        flip = torch.rand(len(samples), generator=g) < 0.5
        x[flip] = x[flip].flip(-1)
        return x.to(device), folder.labels(samples).to(device)

    bs = min(int(train["batch"]), len(folder.train))
    for _ in range(int(train["steps"])):
        if len(order) < bs:
            order += torch.randperm(len(folder.train), generator=g).tolist()
        indices, order = order[:bs], order[bs:]
        x, y = batch_of(indices)
        with amp():
            loss = F.cross_entropy(model(x), y)
        if not torch.isfinite(loss):
            raise QualityError(f"training diverged (loss {float(loss)}) at lr {train['lr']:g}")
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    model.eval()
    val = folder.val[: int(train["val_images"])]
    correct = 0
    with torch.no_grad():
        for start in range(0, len(val), bs):
            chunk = val[start : start + bs]
            with amp():
                logits = model(folder.load(chunk, size).to(device))
            correct += int((logits.argmax(-1).cpu() == folder.labels(chunk)).sum())
    return 100.0 * correct / len(val)


# --------------------------------------------------------------------------------------------------- entry point


def evaluate(
    target_name: str,
    knobs: dict[str, Any],
    names: list[str],
    *,
    workload: dict[str, Any],
    proxy: dict[str, Any],
    train: dict[str, Any],
    data: str | None = None,
    seed: int = 0,
) -> dict[str, float | str]:
    """Compute quality objectives of one design; a value that cannot be computed is replaced by its reason (str).

    Runs in the quality process. Each proxy gets a freshly initialized module (same seed), so the values do not
    depend on the order they are asked in.
    """
    import torch

    from effscope.profile.measure import describe_failure

    folder = None
    if data is not None:
        from effscope.search.imagefolder import open_imagefolder

        folder = open_imagefolder(data)
    if workload.get("threads"):
        torch.set_num_threads(int(workload["threads"]))
    out: dict[str, float | str] = {}
    for name in names:
        try:
            if name == "train":
                if folder is None:
                    raise QualityError("quality 'train' needs --data DIR (an ImageFolder)")
                out[name] = short_train(target_name, knobs, workload, train, folder)
                continue
            if name in ("params", "macs"):
                out.update(_counts(target_name, knobs, workload))
                continue
            batch = int(proxy.get("batch", 8))
            _, module, args, labels = _module_and_inputs(target_name, knobs, workload, batch, folder, seed)
            if name == "synflow":
                out[name] = synflow(module, args)
            elif name == "jacob_cov":
                out[name] = jacob_cov(module, args)
            elif name == "dss":
                out[name] = dss(module, args, labels)
            else:
                raise QualityError(f"unknown quality objective '{name}'")
        except Exception as e:  # a design's failure is data: the reason goes back, the process lives on
            out[name] = describe_failure(e, workload["device"])
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return {k: v for k, v in out.items() if k in names}


def _counts(target_name: str, knobs: dict[str, Any], workload: dict[str, Any]) -> dict[str, float]:
    import torch

    from effscope.profile.counting import count
    from effscope.profile.target import resolve_target

    device = torch.device(workload["device"])
    size = tuple(workload["size"]) if workload.get("size") else None
    target = resolve_target(target_name, knobs)
    module = target.build(device).eval()
    args = target.example_args(module, 1, size, device)
    c = count(module, args)
    return {"params": float(c.params), "macs": float(c.macs)}


# --------------------------------------------------------------------------------------------------- the process


def _serve(conn: Connection, threads: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the search worker decides when to stop
    if threads:
        import torch

        torch.set_num_threads(threads)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        fn, kwargs = msg
        try:
            reply = ("ok", fn(**kwargs))
        except Exception as e:
            reply = ("error", str(e) if isinstance(e, EffscopeError) else f"{type(e).__name__}: {e}")
        try:
            conn.send(reply)
        except (BrokenPipeError, ConnectionResetError):
            return  # the search worker that asked is gone (killed): nobody is left to read the reply
        except Exception as e:  # a value that does not pickle
            conn.send(("error", f"the result could not be sent back: {type(e).__name__}: {e}"))


class QualityProcess:
    """A spawned process that computes quality objectives, started on demand and replaced when it dies.

    Proxies and short training allocate and compute; here a crash, an OOM kill or a hang becomes a reason on the
    trial, and the sampler's process never shares its cores with the work.
    """

    def __init__(self, *, threads: int | None = None) -> None:
        from effscope.profile.child import ChildProcess

        self._child = ChildProcess(_serve, (threads,), "quality process")

    def start(self) -> None:
        """Start the process ahead of the first call."""
        self._child.start()

    def call(self, fn: Callable[..., Any], kwargs: dict[str, Any], *, timeout: float) -> Any:
        """Run fn(**kwargs) in the process; raise QualityError with the reason when it fails."""
        from effscope.profile.child import ChildDied, ChildTimedOut

        try:
            status, value = self._child.request((fn, kwargs), timeout)
        except (ChildTimedOut, ChildDied) as e:
            raise QualityError(f"quality computation failed: {e}") from None
        if status != "ok":
            raise QualityError(value)
        return value

    def close(self) -> None:
        self._child.close()
