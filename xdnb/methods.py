"""Every compression method behind one call: :func:`compress`.

A *method* is one of the engine's distillation objectives (:data:`OBJECTIVES`: ``regression``,
``correction``, ``imitation``, ``cross`` with ``mu``, ``soft`` with ``alpha`` and ``beta``) or a
baseline of :mod:`xdnb.baselines` (:data:`BASELINES`). Each takes typed options
(:func:`options_for`): the objectives an :class:`~xdnb.distill.EngineOptions` (solver and its
settings, BN mode, linear layers, quantization), each baseline its own dataclass
(:data:`xdnb.baselines.OPTIONS`). :func:`label` names a method with its parameters, the one
spelling used by tables, figures and notebooks.

The CLI (``xdnb compress``), :func:`xdnb.experiment.run` and the tutorials'
:meth:`xdnb.tutorial.Bench.run` all compress through :func:`compress`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from . import baselines, checks, distill, objectives
from .distill import Compressed, EngineOptions

OBJECTIVES = objectives.OBJECTIVES
BASELINES = baselines.METHODS
#: Every method name, the objectives first.
NAMES = OBJECTIVES + BASELINES
#: The global stage's settings of the objectives (:mod:`xdnb.global_stage`).
GLOBAL_SETTINGS = ("global_stage", "global_steps", "global_lr", "temperature")


def check_method(method: str) -> str:
    return checks.choice("method", method, NAMES)


def options_for(method: str, values: dict | None = None):
    """The typed options of ``method`` from a dict of settings (``None`` = the defaults).

    Objectives read ``solver``, ``bn``, ``ridge``, ``rounds``, ``steps``, ``lr``, ``linear``,
    ``quantize``, ``views``, ``augment`` and the global stage's ``global_stage``, ``global_steps``,
    ``global_lr``, ``temperature`` (a setting the chosen solver does not read is an error); a
    baseline reads the fields of its :data:`xdnb.baselines.OPTIONS` class (every one but the
    data-free l1-norm takes ``views`` and ``augment``)."""
    values = dict(values or {})
    if check_method(method) in OBJECTIVES:
        checks.known(f"method {method!r}", values, ("solver", "bn", "linear", "quantize", "views", "augment",
                                                    *GLOBAL_SETTINGS, *distill.ENGINE_SETTINGS))
        return EngineOptions.from_settings(**values)
    if method == "l1-norm":
        if values.get("views", 1) != 1:
            raise ValueError(f"l1-norm uses no data, so views do not apply to it; leave views=1 (got {values['views']!r})")
        values.pop("views", None)
        values.pop("augment", None)
    return baselines.options_for(method, **values)


def params_of(method: str, mu: float | None = None, alpha: float | None = None, beta: float | None = None) -> dict:
    """The objective parameters that ``method`` takes, checked: ``{"mu": ...}`` for cross (default
    0.6), ``{"alpha", "beta"}`` for soft (required), ``{}`` otherwise; a parameter the method does
    not take is an error (it would make two identical runs look different)."""
    check_method(method)
    if mu is not None and method != "cross":
        raise ValueError(f"mu only applies to method 'cross', not {method!r}; leave mu=None")
    if (alpha is not None or beta is not None) and method != "soft":
        raise ValueError(f"alpha and beta only apply to method 'soft', not {method!r}; leave them None")
    if method not in OBJECTIVES:
        return {}
    return dict(objectives.get(method, mu=mu, alpha=alpha, beta=beta).params)


def label(method: str, params: dict | None = None) -> str:
    """A method's name with its parameters, spelt out even at their defaults: ``regression``,
    ``cross(mu=0.6)``, ``soft(alpha=0.5, beta=0.5)``, ``fskd``."""
    params = {k: v for k, v in (params or {}).items() if k in ("mu", "alpha", "beta") and v is not None}
    if method == "cross":
        params.setdefault("mu", objectives.DEFAULT_MU)
    inner = ", ".join(f"{k}={params[k]:g}" for k in ("mu", "alpha", "beta") if k in params)
    return f"{method}({inner})" if inner else method


def name_of(label_text: str) -> str:
    """The method name of a :func:`label` (``"cross(mu=0.6)"`` -> ``"cross"``)."""
    return str(label_text).split("(")[0].strip()


def compress(method: str, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
             pruning=None, mu: float | None = None, alpha: float | None = None, beta: float | None = None,
             options=None, seed: int = 0, device=None, batch_size: int | None = None,
             callback: Callable[[dict], None] | None = None, show_progress: bool = True) -> Compressed:
    """Compress ``teacher`` with ``method`` on the K-shot ``images`` (N, C, H, W) (``labels`` (N,):
    needed by the baselines) to ``pruning`` (a plan, spec string, mapping or ``None``).

    ``mu``/``alpha``/``beta``: the objective's parameters (:func:`params_of`); ``options``: a dict
    of settings or the typed options of :func:`options_for`; ``seed``: anything random in the
    method, the objectives' views included (the caller seeds torch's global RNG for the engine, as :func:`xdnb.experiment.run`
    does). Returns the :class:`~xdnb.distill.Compressed` outcome; its ``config`` says what ran.
    """
    params_of(method, mu, alpha, beta)
    typed = options if not isinstance(options, (dict, type(None))) else options_for(method, options)
    if method in OBJECTIVES:
        if not isinstance(typed, EngineOptions):
            raise ValueError(f"the objective {method!r} takes EngineOptions, got {type(typed).__name__}")
        return distill.compress(teacher, images, method, mu=mu, alpha=alpha, beta=beta, pruning=pruning, options=typed,
                                seed=seed, batch_size=batch_size, device=device, callback=callback, show_progress=show_progress)
    if labels is None:
        raise ValueError(f"the baseline {method!r} needs the K-shot labels")
    if not isinstance(typed, baselines.OPTIONS[method]):
        raise ValueError(f"{method} takes {baselines.OPTIONS[method].__name__}, got {type(typed).__name__}")

    return baselines.run(method, teacher, images, labels, pruning, seed=seed, device=device, batch_size=batch_size,
                         callback=callback, show_progress=show_progress, **dataclasses.asdict(typed))
