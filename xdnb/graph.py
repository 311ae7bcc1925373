"""The one module that knows what a network looks like: sites, channel coupling, removal.

:func:`trace` runs any ``nn.Module`` once on an example input and answers, for every layer the
engine fits (a *site*), the questions the rest of xdnb asks:

- **Which layers, in which order.** Every ``nn.Conv2d`` (any kernel, stride, padding, dilation,
  ``groups``, with or without bias) and, with ``linear=True``, every ``nn.Linear``, in forward
  execution order. The order comes from forward *hooks*, not ``torch.fx``: hooks see the real
  execution of any Python ``forward`` (control flow, pooling inside ``forward``, models fx cannot
  trace), and execution order is exactly what the engine needs. Layers with no conv or linear
  upstream (the ones that see the raw image) are *stems*, not sites: their input is the same in
  both networks. A site called twice in one pass is an error naming it (its two calls would need
  one weight fitted to two different inputs).
- **What normalises a site's output.** The batch norm whose input is exactly the site's output
  tensor (``Site.bn``), re-estimated once the site is fitted.
- **What else changes when one of its input channels goes.** Torch-Pruning's
  ``DependencyGraph`` gives the coupled group of a site's input channels: the producing
  conv/linear's outputs and every norm, activation, depthwise conv, concat or flatten in between.
  The rule for *layer-wise* pruning: a site's input channels are prunable when its group contains
  at least one producer conv/linear and no other consumer — no other conv or linear reads those
  channels (depthwise convs in between are carried along) — and no grouped (non-depthwise) conv.
  So a residual stream (read by several convs) and a concat or split that other layers also read
  stay at full width; ``Site.reason`` says why. A depthwise conv's own inputs follow the site
  that consumes its outputs.

Physical removal (:func:`remove_channels`) prunes each site's group through Torch-Pruning's
pruning functions, so a concat, a depthwise conv or a bias is narrowed the same way everywhere.

:class:`SiteStream` captures the inputs of all sites in one forward pass per network: the pass
runs in a worker thread that pauses before each site (and, if asked, each batch norm), so the
caller can fit a layer, and the rest of the same pass then runs through the fitted layer.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

#: The BN statistics a forward pass normalises with (see :class:`SiteStream`).
STATISTICS = ("running", "batch")

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)
SITE_TYPES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class Site:
    """A layer the engine fits. ``kind``: ``"conv"`` or ``"linear"``; ``bn``: the batch norm whose
    input is this layer's output (or ``None``); ``prunable``: whether its input channels can be
    removed layer-wise, else ``reason`` says why; ``producers``: the conv/linear layers whose
    output channels are removed with its input channels; ``coupled``: every module whose channels
    change with them (producers, norms, depthwise convs, the site itself)."""

    name: str
    kind: str
    bn: str | None = None
    prunable: bool = False
    reason: str = ""
    producers: tuple[str, ...] = ()
    coupled: tuple[str, ...] = ()


@dataclass
class ModelGraph:
    """What :func:`trace` found: ``sites`` in forward order, ``stems`` (layers that see the image,
    not fitted), ``input_shape`` (C, H, W) of the example, and the dependency graph."""

    model: nn.Module
    sites: list[Site]
    stems: list[Site]
    input_shape: tuple[int, ...]
    dependency: object = field(repr=False, default=None)

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        raise ValueError(f"{name!r} is not a fitted layer of this model; fitted layers: {_preview([s.name for s in self.sites])}")

    def readable_names(self) -> dict[str, str]:
        """Short labels of the sites for axes: in a plain chain (every layer ``<container>.<index>``
        of one container, like a VGG's ``feature.N``) the convs numbered from the image conv
        (``conv1``, not fitted); elsewhere the module paths, which say where a layer sits."""
        layers = [s.name for s in self.stems + self.sites]
        prefixes = {name.rpartition(".")[0] for name in layers}
        if len(prefixes) == 1 and all(name.rpartition(".")[2].isdigit() for name in layers):
            ordered = sorted(layers, key=lambda n: int(n.rpartition(".")[2]))
            return {s.name: f"{s.kind}{ordered.index(s.name) + 1}" for s in self.sites}
        return {s.name: s.name for s in self.sites}

    def describe(self) -> list[str]:
        """One line per site that stays at full width, with the reason."""
        return [f"{s.name}: {s.reason}" for s in self.sites if not s.prunable]


def _preview(names: Sequence[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _example(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    # two samples: BatchNorm1d in train mode refuses one; the pass runs in eval mode anyway
    return torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)


@contextlib.contextmanager
def _eval(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _execution_order(model: nn.Module, x: torch.Tensor, linear: bool) -> tuple[list[str], dict[str, str]]:
    """Names of the conv (and linear) layers in the order they run, and site -> BN of its output."""
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    bn_of: dict[str, str] = {}
    types = SITE_TYPES if linear else (nn.Conv2d,)

    def layer_hook(module, _inputs, output):
        name = names[module]
        if name in order:
            raise ValueError(f"layer {name!r} runs twice in one forward pass; xdnb fits each layer to one "
                             "input, so a shared layer cannot be fitted (give each use its own module)")
        order.append(name)
        outputs[id(output)] = (name, output)  # the tensor is kept so its id stays unique

    def bn_hook(module, inputs):
        found = outputs.get(id(inputs[0]))
        if found is not None and found[1] is inputs[0] and found[0] not in bn_of:
            bn_of[found[0]] = names[module]

    handles = []
    for module in model.modules():
        if isinstance(module, types):
            handles.append(module.register_forward_hook(layer_hook))
        elif isinstance(module, BN_TYPES):
            handles.append(module.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad(), _eval(model):
            model(x)
    except RuntimeError as error:
        raise ValueError(f"{type(model).__name__} cannot run on inputs of shape (N, {', '.join(map(str, x.shape[1:]))}): "
                         f"{str(error).splitlines()[0][:200]}") from None
    finally:
        for h in handles:
            h.remove()
    return order, bn_of


def _dependency_graph(model: nn.Module, x: torch.Tensor):
    import torch_pruning as tp

    with _eval(model), torch.enable_grad():
        return tp.DependencyGraph().build_dependency(model, example_inputs=x, verbose=False)


def _in_pruning_fn(module: nn.Module):
    import torch_pruning as tp

    return tp.prune_conv_in_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_in_channels


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels == module.out_channels


def group_of(graph: ModelGraph, name: str, indices: Sequence[int]):
    """Torch-Pruning's group for removing input channels ``indices`` of site ``name``."""
    module = graph.model.get_submodule(name)
    return graph.dependency.get_pruning_group(module, _in_pruning_fn(module), list(indices))


def _upstream_layers(dependency, module: nn.Module) -> bool:
    """Whether any conv or linear lies upstream of ``module`` in the traced graph."""
    start = dependency.module2node.get(module)
    if start is None:
        return False
    stack, seen = list(start.inputs), set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node.module, SITE_TYPES):
            return True
        stack.extend(node.inputs)
    return False


def _coupling(graph: ModelGraph, name: str) -> tuple[bool, str, tuple[str, ...], tuple[str, ...]]:
    """(prunable, reason, producers, coupled modules) of site ``name``'s input channels."""
    import torch_pruning as tp

    module = graph.model.get_submodule(name)
    names = {m: n for n, m in graph.model.named_modules()}
    if _is_depthwise(module):
        return False, "depthwise conv: its channels follow the layer that reads its outputs", (), ()
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        return False, f"grouped conv (groups={module.groups}): its input channels are not removed", (), ()
    group = group_of(graph, name, range(input_width(module)))  # all channels: a concat maps them to several producers
    producers, consumers, coupled, grouped = [], [], [], []
    for dep, _ in group:
        target = dep.target.module
        if not isinstance(target, nn.Module) or target not in names:
            continue  # functional ops (activations, reshapes, concats) carry channels along
        layer = names[target]
        coupled.append(layer)
        if isinstance(target, nn.Conv2d) and target.groups > 1 and not _is_depthwise(target):
            grouped.append(layer)
        if isinstance(target, SITE_TYPES) and layer != name:
            if dep.handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels):
                consumers.append(layer)
            elif not _is_depthwise(target):
                producers.append(layer)
    coupled = tuple(dict.fromkeys(coupled))
    if grouped:
        return False, f"its channels pass through the grouped conv {grouped[0]}", tuple(producers), coupled
    if consumers:
        return False, f"its input channels are also read by {_preview(consumers, 3)} (a shared stream)", tuple(producers), coupled
    if not producers:
        return False, "no conv or linear produces its input channels", (), coupled
    if isinstance(module, nn.Linear):
        width = sum(graph.model.get_submodule(p).weight.shape[0] for p in producers)
        if width != module.in_features:
            return False, "a flatten maps several input features to one channel", tuple(producers), coupled
    return True, "", tuple(producers), coupled


def trace(model: nn.Module, input_shape: Sequence[int], linear: bool = False) -> ModelGraph:
    """Trace ``model`` on a random input of ``input_shape`` (C, H, W) (see module docstring).

    ``linear``: fit ``nn.Linear`` layers too (off by default: the paper fits convs). Raises
    ValueError when a layer runs twice or no layer can be fitted.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected an nn.Module, got {type(model).__name__}")
    input_shape = tuple(int(v) for v in input_shape)
    x = _example(model, input_shape)
    order, bn_of = _execution_order(model, x, linear)
    dependency = _dependency_graph(model, x)
    modules = dict(model.named_modules())
    stems = [n for n in order if not _upstream_layers(dependency, modules[n])]
    graph = ModelGraph(model, [], [], input_shape, dependency)
    for name in order:
        kind = "linear" if isinstance(modules[name], nn.Linear) else "conv"
        if name in stems:
            graph.stems.append(Site(name, kind, bn_of.get(name), False, "sees the raw image"))
            continue
        prunable, reason, producers, coupled = _coupling(graph, name)
        graph.sites.append(Site(name, kind, bn_of.get(name), prunable, reason, producers, coupled))
    if not graph.sites:
        raise ValueError(f"{type(model).__name__} has no layer to fit: it needs an nn.Conv2d (or, with linear=True, "
                         "an nn.Linear) that does not see the raw image")
    return graph


def input_width(module: nn.Module) -> int:
    """Input channels of a conv, input features of a linear."""
    return module.in_channels if isinstance(module, nn.Conv2d) else module.in_features


@torch.no_grad()
def remove_channels(graph: ModelGraph, kept_channels: dict[str, Sequence[int]]) -> nn.Module:
    """Physically remove, in place, every input channel of site ``s`` not in ``kept_channels[s]``
    (teacher numbering), with its whole coupled group (Torch-Pruning's pruning functions). The
    result computes what the masked network computes (the removed channels only met zero
    weights). ``graph`` must have been traced on this very model. Returns the model."""
    for name, kept in kept_channels.items():
        site = graph.site(name)
        width = input_width(graph.model.get_submodule(name))
        kept = sorted(set(int(i) for i in kept))
        if kept and (kept[0] < 0 or kept[-1] >= width):
            raise ValueError(f"{name}: kept channels must lie in 0..{width - 1}")
        removed = [i for i in range(width) if i not in set(kept)]
        if not removed:
            continue
        if not site.prunable:
            raise ValueError(f"the input channels of {name} cannot be removed: {site.reason}")
        if not kept:
            raise ValueError(f"{name}: at least one input channel must be kept")
        group_of(graph, name, removed).prune(record_history=False)
    return graph.model


def channel_map(graph: ModelGraph, name: str) -> dict[str, list[tuple[int, int]]]:
    """For site ``name``: module -> [(its channel index, the site's input channel)] for every
    producer's output channels (used to rank channels by their filters and to widen a network)."""
    width = input_width(graph.model.get_submodule(name))
    names = {m: n for n, m in graph.model.named_modules()}
    mapping: dict[str, list[tuple[int, int]]] = {}
    for item in group_of(graph, name, range(width)):
        target = item.dep.target.module
        if isinstance(target, nn.Module) and names.get(target) in graph.site(name).producers:
            mapping.setdefault(names[target], []).extend(zip(item.idxs, item.root_idxs))
    return mapping


# --- one forward pass per network ---------------------------------------------------------------


class _Abort(Exception):
    """Raised inside a paused forward pass to end it."""


@contextlib.contextmanager
def bn_batch_statistics(model: nn.Module) -> Iterator[None]:
    """Within the block every BN normalises with the batch's own statistics and leaves its running
    statistics untouched (train-mode BN without tracking); everything else is in eval mode."""
    saved = []
    for m in model.modules():
        if isinstance(m, BN_TYPES):
            saved.append((m, m.training, m.track_running_stats))
            m.train()
            m.track_running_stats = False
    try:
        yield
    finally:
        for m, training, tracking in saved:
            m.train(training)
            m.track_running_stats = tracking


class _PausedPass:
    """``model(batch)`` in a worker thread that stops before every watched module (the stream's
    hooks call :meth:`pause`) and hands its input over until :meth:`resume` is called."""

    def __init__(self, model: nn.Module, batch: torch.Tensor, passes: dict):
        self.events: queue.Queue = queue.Queue()
        self.go = threading.Semaphore(0)
        self.abort = False
        self.model, self.batch = model, batch
        self.thread = threading.Thread(target=self._run, args=(passes,), daemon=True)
        self.thread.start()

    def pause(self, name: str, x: torch.Tensor) -> None:
        self.events.put(("input", name, x))
        self.go.acquire()
        if self.abort:
            raise _Abort

    def _run(self, passes: dict):
        passes[threading.get_ident()] = self
        try:
            with torch.no_grad():
                self.model(self.batch)
            self.events.put(("done", None, None))
        except _Abort:
            self.events.put(("done", None, None))
        except BaseException as error:  # handed to the caller's thread
            self.events.put(("error", None, error))

    def next_event(self):
        return self.events.get()

    def resume(self):
        self.go.release()

    def stop(self):
        self.abort = True
        self.go.release()
        self.thread.join()


def _batches(images: torch.Tensor, batch_size: int | None) -> list[torch.Tensor]:
    step = len(images) if not batch_size else batch_size
    return [images[start:start + step] for start in range(0, len(images), step)]


class SiteStream:
    """The inputs of the modules ``names`` (and, if given, the batch norms ``bns``) of ``model`` on
    ``images`` (N, C, H, W), in the order the forward pass reaches them, from one pass.

    Iterating yields ``(name, input)`` with ``input`` (N, ...) concatenated over batches; the pass
    is paused meanwhile, so the caller may change the module just yielded (or anything after it)
    and the pass goes on through the changed network: what is yielded equals a fresh capture of
    the network as it is at that moment. ``statistics``: the BN statistics the pass normalises with,
    ``"running"`` (the BN layers' running statistics) or ``"batch"`` (each batch's own; see
    :func:`bn_batch_statistics`). The model runs in eval
    mode and its mode is restored afterwards. A module missing from the pass is an error.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], images: torch.Tensor, batch_size: int | None = None,
                 statistics: str = "running", bns: Sequence[str] = ()):
        if statistics not in STATISTICS:
            raise ValueError(f"statistics must be one of {', '.join(STATISTICS)}, got {statistics!r}")
        modules = dict(model.named_modules())
        wanted = list(names) + [b for b in bns if b not in set(names)]
        self.required = list(names)  # batch norms the pass never reaches are simply not yielded
        missing = [n for n in wanted if n not in modules]
        if missing:
            raise ValueError(f"model has no module {missing[0]!r}")
        self.model, self.images, self.batch_size, self.statistics = model, images, batch_size, statistics
        self.watched = {modules[n]: n for n in wanted}

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        if not self.watched:
            return
        was_training = self.model.training
        if was_training:  # (a model already in eval mode keeps its BN flags, e.g. inside bn_batch_statistics)
            self.model.eval()
        passes = []
        pending = set(self.required)
        statistics = bn_batch_statistics(self.model) if self.statistics == "batch" else contextlib.nullcontext()
        by_thread: dict = {}

        def hook(module, inputs):
            current = by_thread.get(threading.get_ident())
            if current is not None:  # a pass of this stream (other threads run the model freely)
                current.pause(self.watched[module], inputs[0])

        handles = [m.register_forward_pre_hook(hook) for m in self.watched]
        try:
            statistics.__enter__()
            passes = [_PausedPass(self.model, b, by_thread) for b in _batches(self.images, self.batch_size)]
            started = False
            while True:
                events = []
                for p in passes:
                    if started:
                        p.resume()
                    events.append(p.next_event())
                started = True
                kinds = {e[0] for e in events}
                errors = [e[2] for e in events if e[0] == "error"]
                if errors:
                    raise errors[0]
                if kinds == {"done"}:
                    break
                names = {e[1] for e in events}
                if kinds != {"input"} or len(names) != 1:
                    raise ValueError("the batches took different paths through the model")
                name = names.pop()
                pending.discard(name)
                yield name, torch.cat([e[2] for e in events]) if len(events) > 1 else events[0][2]
            if pending:
                raise ValueError(f"the forward pass never reached {sorted(pending)[0]!r}")
        finally:
            for p in passes:
                if p.thread.is_alive():
                    p.stop()
            statistics.__exit__(None, None, None)
            for h in handles:
                h.remove()
            if was_training:
                self.model.train()


class _Reached(Exception):
    def __init__(self, x: torch.Tensor):
        self.x = x


@torch.no_grad()
def input_of(model: nn.Module, name: str, images: torch.Tensor, statistics: str = "running") -> torch.Tensor:
    """The input of module ``name`` of ``model`` on ``images`` (N, C, H, W): the forward pass runs up
    to that module and stops there (nothing after it runs). ``statistics`` as in :class:`SiteStream`;
    the model runs in eval mode and its mode is restored. What :class:`SiteStream` yields for
    ``name``, recomputed from the images: the engine's streamed capture
    (:data:`xdnb.distill.CAPTURE_BUDGET`) calls it once per chunk of images, so only a chunk's
    activations are ever held."""
    if statistics not in STATISTICS:
        raise ValueError(f"statistics must be one of {', '.join(STATISTICS)}, got {statistics!r}")
    module = dict(model.named_modules()).get(name)
    if module is None:
        raise ValueError(f"model has no module {name!r}")

    def stop(_, inputs):
        raise _Reached(inputs[0])

    was_training = model.training
    handle = module.register_forward_pre_hook(stop)
    try:
        if was_training:  # (as in SiteStream: a model already in eval mode keeps its BN flags)
            model.eval()
        with bn_batch_statistics(model) if statistics == "batch" else contextlib.nullcontext():
            model(images)
    except _Reached as reached:
        return reached.x
    finally:
        handle.remove()
        if was_training:
            model.train()
    raise ValueError(f"the forward pass never reached {name!r}")


@torch.no_grad()
def capture_inputs(model: nn.Module, names: Sequence[str], images: torch.Tensor, batch_size: int | None = None,
                   statistics: str = "running") -> dict[str, torch.Tensor]:
    """Inputs of the modules ``names`` when ``model`` runs on ``images``: ``{name: (N, ...)}``,
    from one forward pass (:class:`SiteStream`)."""
    return {name: x.clone() for name, x in SiteStream(model, names, images, batch_size, statistics)}


def capture_input(model: nn.Module, name: str, images: torch.Tensor, batch_size: int | None = None,
                  statistics: str = "running") -> torch.Tensor:
    """The input of module ``name`` on ``images``: (N, C_in, H, W) for a conv."""
    return capture_inputs(model, [name], images, batch_size, statistics)[name]


def feature_points(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[str, str | None]]:
    """Where a network's spatial resolution drops: ``(module, producer)`` for every module whose
    output is spatially smaller than its 4-d input (a pooling or strided layer), the input not
    being the image, one per distinct input tensor, in forward order. ``producer`` is the conv or
    linear whose output channels that input carries, found by walking back through single-input
    modules (norms, activations), or ``None`` (e.g. after a residual sum or a functional op)."""
    names = {m: n for n, m in model.named_modules()}
    made_by: dict[int, tuple] = {}  # id(output) -> (module, its input, the output itself)
    points: list[tuple[str, torch.Tensor]] = []
    x = _example(model, input_shape)

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor) or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        source = inputs[0]
        if source.ndim == 4 and output.ndim >= 2 and source is not x and (
                output.ndim < 4 or output.shape[-1] < source.shape[-1] or output.shape[-2] < source.shape[-2]):
            if all(source is not seen for _, seen in points):
                points.append((names[module], source))
        if output is not source:  # an in-place activation leaves its producer in place
            made_by[id(output)] = (names[module], source, output)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad(), _eval(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    found = []
    for name, tensor in points:
        producer, current = None, tensor
        for _ in range(len(leaves)):
            entry = made_by.get(id(current))
            if entry is None or entry[2] is not current:
                break
            if isinstance(modules[entry[0]], SITE_TYPES):
                producer = entry[0]
                break
            current = entry[1]
        found.append((name, producer))
    return found


# --- the feature map before global pooling ---------------------------------------------------


_POOLS = ("pool", "mean", "amax", "sum", "max")


class _HeadEntry(torch.overrides.TorchFunctionMode):
    """Watches every torch function call of a forward pass (module calls and the functional ones a
    ``forward`` makes itself, e.g. ``F.adaptive_avg_pool2d`` or ``x.mean((2, 3))``) for the calls
    that enter the head: a 4-d input (N, C, H, W) turned into fewer dimensions with the batch kept
    (a flatten, a mean over H and W, ...). The feature map of such a call is its input, or, when
    that input is already pooled to 1×1 by a pooling call that keeps the channels (an average or
    max pool, a mean), that pooling call's input. ``capture``: the number (0-based, in call order)
    of the head-entry call whose feature map to keep in :attr:`captured`."""

    def __init__(self, capture: int | None = None):
        super().__init__()
        self.count, self.shapes, self.ops, self.capture, self.captured = 0, [], [], capture, None
        self._pooled: dict[int, tuple] = {}  # id(1×1 output of a pooling call) -> (the output, its input, op)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        source = args[0] if args else None
        if not (isinstance(source, torch.Tensor) and isinstance(output, torch.Tensor) and source.ndim == 4):
            return output
        name = getattr(func, "__name__", str(func))
        if (output.ndim == 4 and output.shape[-1] * output.shape[-2] == 1 and output.shape[:2] == source.shape[:2]
                and any(word in name for word in _POOLS)):
            self._pooled[id(output)] = (output, source, name)
        elif output.ndim >= 2 and output.ndim < 4 and output.shape[0] == source.shape[0]:
            feature, op = source, name
            pooled = self._pooled.get(id(source))
            if pooled is not None and pooled[0] is source:
                feature, op = pooled[1], pooled[2]
            if self.count == self.capture:
                self.captured = feature
            self.shapes.append(tuple(feature.shape[1:]))
            self.ops.append(op)
            self.count += 1
        return output


@dataclass(frozen=True)
class FeatureMap:
    """Where a network's last feature map is: that of the ``index``-th head-entry call (0-based, in
    call order; :class:`_HeadEntry`), taken at the call ``op`` (the pooling, or the flatten);
    ``shape``: (C, H, W)."""

    index: int
    op: str
    shape: tuple[int, ...]


def final_feature_map(model: nn.Module, input_shape: Sequence[int]) -> FeatureMap:
    """The teacher's last feature map before global pooling (what MiR mimics), found for any model
    by watching one forward pass on an example input (:class:`_HeadEntry`): at the *last* call that
    turns a 4-d map into fewer dimensions (a flatten, a mean over H and W), the input of the global
    pooling in front of it (a pooling module or a functional pooling inside ``forward``), else that
    call's own input (a flatten straight into the head). Everything after it is the *head*. A model
    that never does so (a fully convolutional output) is a ValueError."""
    watch = _HeadEntry()
    x = _example(model, input_shape)
    with torch.no_grad(), _eval(model), watch:
        model(x)
    if not watch.count:
        raise ValueError(f"{type(model).__name__} never pools or flattens its feature map into a vector (no call turns "
                         f"a (N, C, H, W) map into fewer dimensions), so it has no final feature map for mir")
    return FeatureMap(watch.count - 1, watch.ops[-1], watch.shapes[-1])


def forward_with_feature_map(model: nn.Module, x: torch.Tensor, where: FeatureMap) -> tuple[torch.Tensor, torch.Tensor]:
    """``model(x)`` and its feature map at ``where`` (:func:`final_feature_map` of the same
    architecture, pruned or not: the call order does not depend on the widths), both in the
    autograd graph."""
    watch = _HeadEntry(capture=where.index)
    with watch:
        output = model(x)
    if watch.captured is None:
        raise ValueError(f"the forward pass made {watch.count} head-entry calls, not the {where.index + 1} of the "
                         f"traced model: is this the same architecture?")
    return output, watch.captured
