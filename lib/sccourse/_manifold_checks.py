"""Test doubles that watch a denoiser training loop (used by the graded cells of ``01_tcell_manifold``).

A training loop is hard to check from its results alone: a loop that draws the noise once, forgets
``optimizer.zero_grad()``, trains on its validation cells or validates with gradients on can still end with a
decreasing loss. :class:`TrainingSpy` watches the loop while it runs, through PyTorch's global hooks (nothing in
torch is replaced):

* every forward pass of the first layer (``nn.Linear(d, hidden)``) is matched to the cells it was fed, with the
  module's train/eval mode and whether gradients were on;
* the output of the last layer (``nn.Linear(hidden, d)``) gives the squared error of those cells against the clean
  matrix, so the losses the loop reports can be recomputed;
* every optimiser step records the optimiser's type and settings, and whether each parameter's gradient is the
  gradient of this step's backward pass alone (it is not when ``zero_grad`` is missing).

:meth:`TrainingSpy.problems` lists what differs from the loop the question asks for (an empty list when nothing
does); :meth:`TrainingSpy.verify` raises an ``AssertionError`` with that list.
"""

from __future__ import annotations

import importlib
import math
import re

import numpy as np
import torch
from torch import nn

__all__ = ["CountingNoise", "TrainingSpy"]


def _settle_torch() -> None:
    """Import ``torch._dynamo`` now, before the notebook's training cells run.

    The first optimiser a notebook creates (any function torch decorates with ``torch._disable_dynamo``) imports
    ``torch._dynamo``, which rebinds ``torch.manual_seed`` to a wrapper. The grading guard
    (:mod:`sccourse.grading._guard`) records torch's functions when ``sccourse.grading`` is first imported and
    reports a later rebinding as tampering. A grading kernel's guard loads enough libraries to import
    ``torch._dynamo`` before its record; importing this module before ``sccourse.grading`` in a notebook's set-up
    cell does the same in a plain kernel, so that nothing in torch changes afterwards.
    """
    importlib.import_module("torch._dynamo")


_settle_torch()


class CountingNoise:
    """Gaussian corruption ``X + σ ε`` from a private seeded generator that counts and keeps its draws.

    ``sample(X)`` accepts and ignores extra keyword arguments, so it can stand in for any noise process.
    """

    def __init__(self, sigma: float = 0.5, seed: int = 0):
        self.sigma = float(sigma)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.calls = 0
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def sample(self, X, **kwargs):
        self.calls += 1
        eps = torch.randn(tuple(X.shape), generator=self.gen, dtype=X.dtype)
        out = X + self.sigma * eps.to(X.device)
        self.inputs.append(X.detach().cpu().clone())
        self.outputs.append(out.detach().cpu().clone())
        return out

    def __repr__(self) -> str:
        return f"CountingNoise(sigma={self.sigma}, calls={self.calls})"


class TrainingSpy:
    """Context manager that records how a denoiser training loop uses its model, data and optimiser.

    Parameters
    ----------
    X
        The clean (cells x genes) matrix the loop is given (its targets).
    noise
        The :class:`CountingNoise` the loop is given; each of its draws starts an epoch.
    hidden
        Width of the hidden layer, to tell the first linear layer (``d → hidden``) from the last (``hidden → d``).
    """

    def __init__(self, X: torch.Tensor, noise: CountingNoise, *, hidden: int):
        self.X = X.detach().cpu().double()
        self.n, self.d = self.X.shape
        self.noise = noise
        self.hidden = int(hidden)
        if self.hidden == self.d:
            raise ValueError("choose hidden != d so that the two layers can be told apart")
        self.events: list[dict] = []  # one per forward pass of the first layer
        self.steps: list[dict] = []  # one per optimiser step
        self.first_layers: set[int] = set()
        self._pending: dict | None = None
        self._fresh: dict[int, torch.Tensor] = {}
        self._hooked: set[int] = set()
        self._handles: list = []
        self._param_handles: list = []

    # ---- hooks -------------------------------------------------------------------------------------------
    def _cells(self, x: torch.Tensor):
        if not self.noise.outputs:
            return None
        ref = self.noise.outputs[-1].double()
        x = x.detach().cpu().double().reshape(-1, self.d)
        dist = torch.cdist(x, ref)
        best, idx = dist.min(dim=1)
        scale = 1e-4 * (1.0 + float(ref.abs().max()))
        if bool((best > scale).any()):
            return None
        return idx.numpy()

    def _watch_params(self, module: nn.Module) -> None:
        for p in module.parameters():
            if id(p) in self._hooked or not p.requires_grad:
                continue
            self._hooked.add(id(p))
            self._param_handles.append(p.register_hook(self._keeper(id(p))))

    def _keeper(self, key: int):
        def keep(grad):
            self._fresh[key] = grad.detach().clone()

        return keep

    def _pre(self, module, args):
        if not isinstance(module, nn.Linear) or not args:
            return
        if module.in_features == self.d and module.out_features == self.hidden:
            self._watch_params(module)
            self.first_layers.add(id(module))
            event = {
                "epoch": self.noise.calls,
                "cells": self._cells(args[0]),
                "training": module.training,
                "grad": torch.is_grad_enabled(),
                "sse": None,
            }
            self.events.append(event)
            self._pending = event
        elif module.in_features == self.hidden and module.out_features == self.d:
            self._watch_params(module)

    def _post(self, module, args, output):
        if not isinstance(module, nn.Linear) or self._pending is None:
            return
        if module.in_features == self.hidden and module.out_features == self.d:
            event, self._pending = self._pending, None
            if event["cells"] is not None and isinstance(output, torch.Tensor):
                out = output.detach().cpu().double().reshape(-1, self.d)
                if out.shape[0] == len(event["cells"]):
                    event["sse"] = float(((out - self.X[event["cells"]]) ** 2).sum())

    def _step(self, optimizer, args, kwargs):
        stale = 0
        for group in optimizer.param_groups:
            for p in group["params"]:
                fresh = self._fresh.get(id(p))
                if p.grad is None or fresh is None:
                    continue
                if not torch.allclose(p.grad.detach(), fresh.to(p.grad.device), rtol=1e-5, atol=1e-8):
                    stale += 1
        self._fresh.clear()
        self.steps.append(
            {
                "epoch": self.noise.calls,
                "type": type(optimizer),
                "lr": [g.get("lr") for g in optimizer.param_groups],
                "weight_decay": [g.get("weight_decay") for g in optimizer.param_groups],
                "params": {id(p) for g in optimizer.param_groups for p in g["params"]},
                "stale": stale,
            }
        )

    def __enter__(self):
        from torch.nn.modules import module as nn_module
        from torch.optim import optimizer as optim_module

        self._handles = [
            nn_module.register_module_forward_pre_hook(self._pre),
            nn_module.register_module_forward_hook(self._post),
            optim_module.register_optimizer_step_pre_hook(self._step),
        ]
        return self

    def __exit__(self, *exc):
        for h in self._handles + self._param_handles:
            h.remove()
        self._handles, self._param_handles = [], []
        return False

    # ---- verdict -----------------------------------------------------------------------------------------
    def problems(
        self,
        model,
        history,
        *,
        epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        val_fraction: float,
        seed: int,
    ) -> list[str]:
        """What differs from the loop the question asks for (empty when the loop does what it should)."""
        import pandas as pd

        out: list[str] = []
        n, d = self.n, self.d
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
        n_val = round(val_fraction * n)
        val, train = set(perm[:n_val].tolist()), set(perm[n_val:].tolist())
        n_batches = math.ceil(len(train) / batch_size)

        # the noise: once per epoch, on the clean cells
        if self.noise.calls != epochs:
            out.append(
                f"noise.sample was called {self.noise.calls} times for {epochs} epochs: draw a new corruption "
                "of all cells once at the start of every epoch"
            )
            return out
        if any(
            x.shape != self.X.shape or not torch.allclose(x.double(), self.X, atol=1e-6)
            for x in self.noise.inputs
        ):
            out.append("noise.sample must be given the clean matrix X (all cells, all genes)")
        if any(e["cells"] is None for e in self.events if e["epoch"] > 0):
            out.append(
                "the model was fed rows that are not this epoch's corrupted cells: feed it noise.sample(X)'s "
                "rows (drawn at the start of the epoch)"
            )
            return out

        # the model
        if not isinstance(model, nn.Module):
            out.append(f"return the trained model (an nn.Module), got {type(model).__name__}")
            return out
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if [(m.in_features, m.out_features) for m in linears] != [(d, self.hidden), (self.hidden, d)]:
            out.append(
                f"the model must be Linear({d}, hidden) -> GELU -> Linear(hidden, {d}), found linear layers "
                f"{[(m.in_features, m.out_features) for m in linears]}"
            )
        if not any(isinstance(m, nn.GELU) for m in model.modules()):
            out.append("the model needs a GELU between its two linear layers")
        if model.training:
            out.append("return the model in eval mode (model.eval())")
        if linears and id(linears[0]) not in self.first_layers:
            out.append("the returned model is not the one that was trained")

        # per epoch: which cells were trained on and validated, in which mode
        for e in range(1, min(epochs, self.noise.calls) + 1):
            here: list[str] = []
            ev = [x for x in self.events if x["epoch"] == e]
            fit = [x for x in ev if x["grad"]]
            ev_val = [x for x in ev if not x["grad"]]
            fit_cells = np.concatenate([x["cells"] for x in fit]) if fit else np.zeros(0, int)
            val_cells = np.concatenate([x["cells"] for x in ev_val]) if ev_val else np.zeros(0, int)
            with_val = [x for x in fit if set(x["cells"].tolist()) & val]
            if with_val and all(not x["training"] for x in with_val):
                here.append(
                    f"epoch {e}: the validation pass ran with gradients on: wrap it in torch.no_grad()"
                )
            elif with_val:
                leaked = set(fit_cells.tolist()) & val
                here.append(
                    f"epoch {e}: {len(leaked)} validation cells were used for training; hold out the cells "
                    "perm[:n_val] of the question's split and train on the others only"
                )
            batches = [x for x in fit if all(x is not y for y in with_val)]
            if any(not x["training"] for x in batches):
                here.append(
                    f"epoch {e}: training batches ran in eval mode: call model.train() at the start of "
                    "every epoch (the validation pass switched it to eval)"
                )
            if any(x["training"] for x in ev_val):
                here.append(f"epoch {e}: the validation pass ran in train mode: call model.eval() before it")
            if not with_val:
                if sorted(fit_cells.tolist()) != sorted(train):
                    here.append(
                        f"epoch {e}: every training cell (perm[n_val:]) must be in exactly one mini-batch "
                        "per epoch"
                    )
                elif any(len(x["cells"]) > batch_size for x in fit) or len(fit) != n_batches:
                    here.append(
                        f"epoch {e}: expected {n_batches} mini-batches of at most {batch_size} cells, "
                        f"found {len(fit)} of sizes {[len(x['cells']) for x in fit]}"
                    )
                if not ev_val or set(val_cells.tolist()) != val or len(val_cells) != len(val):
                    here.append(
                        f"epoch {e}: the validation pass (model.eval(), torch.no_grad()) must cover each "
                        f"of the {len(val)} validation cells perm[:n_val] once, found "
                        f"{len(val_cells)} rows of {len(set(val_cells.tolist()))} cells"
                    )
            steps = [s for s in self.steps if s["epoch"] == e]
            if not here and len(steps) != len(fit):
                here.append(
                    f"epoch {e}: {len(steps)} optimizer steps for {len(fit)} training batches: one "
                    "optimizer.step() per mini-batch"
                )
            out += here
        if out:  # one line per kind of problem, at the first epoch it shows
            seen, unique = set(), []
            for line in out:
                key = re.sub(r"^epoch \d+: ", "", line)
                key = re.sub(r"\d+", "#", key)
                if key not in seen:
                    seen.add(key)
                    unique.append(line)
            return unique
        if epochs >= 2:
            firsts = [
                np.concatenate([x["cells"] for x in self.events if x["epoch"] == e and x["grad"]])
                for e in (1, 2)
            ]
            if np.array_equal(firsts[0], firsts[1]):
                out.append("the training cells come in the same order every epoch: shuffle them each epoch")

        # the optimiser
        if not self.steps:
            out.append("no optimizer step was taken")
        else:
            kinds = {s["type"] for s in self.steps}
            if kinds != {torch.optim.AdamW}:
                out.append(f"use torch.optim.AdamW, found {sorted(k.__name__ for k in kinds)}")
            if any(not np.allclose(s["lr"], lr, rtol=1e-12) for s in self.steps):
                out.append(f"the optimizer's learning rate must be lr = {lr}, found {self.steps[0]['lr']}")
            if any(not np.allclose(s["weight_decay"], weight_decay, rtol=1e-12) for s in self.steps):
                out.append(
                    f"the optimizer's weight decay must be weight_decay = {weight_decay}, found "
                    f"{self.steps[0]['weight_decay']}"
                )
            if {id(p) for p in model.parameters()} != self.steps[0]["params"]:
                out.append("the optimizer must update all of the model's parameters (model.parameters())")
            if any(s["stale"] for s in self.steps):
                out.append(
                    "gradients accumulate across mini-batches: call optimizer.zero_grad() before each "
                    "backward pass"
                )

        # the history: the losses the loop saw
        if not isinstance(history, pd.DataFrame):
            out.append(f"return the history as a pandas DataFrame, got {type(history).__name__}")
            return out
        if list(history.columns) != ["epoch", "train_loss", "val_loss"] or len(history) != epochs:
            out.append(
                f"the history needs columns ['epoch', 'train_loss', 'val_loss'] and one row per epoch "
                f"({epochs}), got {list(history.columns)} x {len(history)}"
            )
            return out
        if not np.array_equal(history["epoch"].to_numpy(), np.arange(1, epochs + 1)):
            out.append("history['epoch'] must count 1, 2, ..., epochs")
        tr, va = [], []
        for e in range(1, epochs + 1):
            ev = [x for x in self.events if x["epoch"] == e]
            tr.append(
                sum(np.nan if x["sse"] is None else x["sse"] for x in ev if x["grad"]) / (len(train) * d)
            )
            va.append(
                sum(np.nan if x["sse"] is None else x["sse"] for x in ev if not x["grad"]) / (len(val) * d)
            )
        if not np.allclose(history["train_loss"].to_numpy(dtype=float), tr, rtol=1e-4, atol=1e-7):
            out.append(
                "train_loss must be the epoch's mean squared error over all training cells (the mini-batch "
                f"MSEs weighted by batch size): expected {np.round(tr, 5).tolist()}, got "
                f"{np.round(history['train_loss'].to_numpy(dtype=float), 5).tolist()}"
            )
        if not np.allclose(history["val_loss"].to_numpy(dtype=float), va, rtol=1e-4, atol=1e-7):
            out.append(
                "val_loss must be the MSE of the model on the validation cells' corrupted inputs of the epoch "
                f"against their clean values: expected {np.round(va, 5).tolist()}, got "
                f"{np.round(history['val_loss'].to_numpy(dtype=float), 5).tolist()}"
            )
        return out

    def verify(self, model, history, **kwargs) -> None:
        """Raise ``AssertionError`` listing :meth:`problems` (keyword arguments as there)."""
        found = self.problems(model, history, **kwargs)
        assert not found, "the training loop differs from the question's:\n- " + "\n- ".join(found)
