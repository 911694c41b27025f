"""Loaded pipelines, kept warm within a memory budget.

Every pipeline comes from ``PipelineClass.from_pretrained(folder, local_files_only=True)``,
the same path for the tiny set and for real weights. Three kinds of sharing keep a
component from being loaded twice:

* a pipeline of another class over the same folder (img2img next to text-to-image) is
  built from the loaded one's modules, with its own scheduler (a scheduler carries
  per-call state). ``from_pipe`` would do this too, but it casts every shared module to
  one dtype, undoing the fp32 modules ``from_pretrained`` may keep;
* a pipeline that needs fewer components (the Redux base, which takes prompt embeddings
  and so needs no text encoders) is served by a loaded superset, or loaded without them;
* a component folder whose weights equal an already-loaded module's (dev, schnell and
  Kontext ship the same text encoders and VAE) reuses that module (see fingerprint.py).

Memory is counted as the bytes of the unique parameters and buffers of the cached
pipelines; past ``budget_bytes`` the least recently used pipelines are dropped (their
modules go once no cached pipeline holds them). The caller serialises access: the
backend calls ``get`` under the lock that also serialises runs, so nothing in use is
ever evicted.
"""

from __future__ import annotations

import inspect
import json
import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import DiffusionPipeline

from openfal.backends.local.acceleration import tensor_bytes
from openfal.backends.local.fingerprint import ComponentId, component_id
from openfal.backends.local.memory_plan import CONSTRUCTION_LOCK
from openfal.backends.local.oom import guard, release_memory
from openfal.errors import ModelUnavailable

log = logging.getLogger("openfal.local")


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """One pipeline to have loaded: a class over a model folder, optionally without
    some components (they are passed as None)."""

    model: str
    folder: Path
    class_name: str
    without: frozenset[str] = field(default_factory=frozenset)


class ModelCache:
    def __init__(
        self,
        *,
        device: torch.device,
        dtype: torch.dtype,
        budget_bytes: int,
        place: Callable[[PipelineSpec, DiffusionPipeline], None] | None = None,
        prepare: Callable[[PipelineSpec, DiffusionPipeline], None] | None = None,
        estimate: Callable[[PipelineSpec, frozenset[str]], int | None] | None = None,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self.budget_bytes = budget_bytes
        #: puts a freshly loaded pipeline on the device (default: all of it, ``pipe.to``);
        #: the engine passes its memory plan's placement
        self._place = place or (lambda spec, pipe: pipe.to(self.device))
        #: runs once per freshly loaded pipeline after placing it (acceleration)
        self._prepare = prepare
        #: device bytes a model will need once placed (its memory plan: weights at the dtypes
        #: the plan stores, activations, reserve), given the components it reuses; None:
        #: the size of its files
        self._estimate = estimate
        #: the components the pipeline being placed reuses from loaded ones (the memory
        #: plan does not count them again)
        self.reusing: frozenset[str] = frozenset()
        self._bytes: int | None = None
        self._pipelines: OrderedDict[PipelineSpec, DiffusionPipeline] = OrderedDict()
        self._ids: weakref.WeakKeyDictionary[torch.nn.Module, ComponentId] = weakref.WeakKeyDictionary()

    # -- public --------------------------------------------------------------------------

    def get(self, *specs: PipelineSpec) -> list[DiffusionPipeline]:
        """The pipelines for ``specs`` (all kept through any eviction this causes)."""
        pinned = frozenset(specs)
        pipes = [self._get_one(spec, pinned) for spec in specs]
        self._evict(keep=pinned, incoming=0)
        return pipes

    def adopt(self, spec: PipelineSpec, pipe: DiffusionPipeline) -> None:
        """Serve ``pipe``, built in memory, as ``spec`` (the GPU benchmark: random weights
        of the real shapes), placed and accelerated like a loaded one."""
        self.reusing = frozenset()
        self._place(spec, pipe)
        if self._prepare is not None:
            self._prepare(spec, pipe)
        pipe.set_progress_bar_config(disable=True)
        self._pipelines[spec] = pipe
        self._bytes = None

    def is_loaded(self, spec: PipelineSpec) -> bool:
        return spec in self._pipelines

    def _get_one(self, spec: PipelineSpec, pinned: frozenset[PipelineSpec]) -> DiffusionPipeline:
        if spec in self._pipelines:
            self._pipelines.move_to_end(spec)
            return self._pipelines[spec]
        pipe = self._from_loaded(spec) or self._load(spec, pinned)
        pipe.set_progress_bar_config(disable=True)
        self._pipelines[spec] = pipe
        self._bytes = None
        return pipe

    def loaded(self) -> list[PipelineSpec]:
        return list(self._pipelines)

    def loaded_bytes(self) -> int:
        """Real bytes (quantised weights at their packed size) of the loaded modules'
        tensors that live on the device; a text encoder waiting in host memory is not
        counted. Computed once per load or eviction, not per request."""
        if self._bytes is None:
            self._bytes = sum(_module_bytes(m, self.device) for m in self._unique_modules())
        return self._bytes

    def clear(self) -> None:
        self._pipelines.clear()
        self._bytes = None
        _release_memory(self.device)

    # -- building from what is loaded -------------------------------------------------------

    def _from_loaded(self, spec: PipelineSpec) -> DiffusionPipeline | None:
        for other, pipe in reversed(self._pipelines.items()):
            if other.folder != spec.folder or not other.without <= spec.without:
                continue
            if other.class_name == spec.class_name:
                return pipe  # a superset of the same class serves as is
            return _derive(_pipeline_class(spec.class_name), pipe, spec.without)
        return None

    # -- loading ------------------------------------------------------------------------------

    def _load(self, spec: PipelineSpec, pinned: frozenset[PipelineSpec]) -> DiffusionPipeline:
        reused, incoming = self._reusable_components(spec)
        self._evict(keep=pinned, incoming=incoming)
        self.reusing = frozenset(reused)
        kwargs: dict[str, Any] = {**reused, **{name: None for name in spec.without}}
        log.info("loading %s (%s) from %s; reusing %s", spec.model, spec.class_name, spec.folder, sorted(reused) or "nothing")
        cls = _pipeline_class(spec.class_name)
        try:
            own = _own_components(spec)
            with CONSTRUCTION_LOCK:  # see its comment: loads in two threads would share meta tensors
                pipe = cls.from_pretrained(spec.folder, local_files_only=True, dtype=self.dtype, **kwargs, **dict.fromkeys(own))
            if own:
                pipe.register_modules(**own)
        except Exception as exc:  # any reader error (safetensors, json, config) is a broken install
            raise ModelUnavailable(
                f"Model {spec.model} at {spec.folder} could not be loaded ({type(exc).__name__}: {exc}). "
                f"Re-install it with `openfal models download {spec.model}`."
            ) from exc
        held = [pipe]  # dropped by the cleanup below should placing run out of memory
        del pipe

        def place() -> DiffusionPipeline:
            self._place(spec, held[0])
            if self._prepare is not None:
                self._prepare(spec, held[0])
            return held[0]

        pipe = guard(self.device, f"loading {spec.model}", place, cleanup=held.clear)
        held.clear()  # (not `del held`: place() closes over it)
        for name, module in pipe.components.items():
            if isinstance(module, torch.nn.Module) and name not in reused:
                ident = self._component_ids(spec.folder).get(name)
                if ident is not None:
                    self._ids[module] = ident
        return pipe

    def _reusable_components(self, spec: PipelineSpec) -> tuple[dict[str, torch.nn.Module], int]:
        """Loaded modules equal to ``spec``'s components, and the bytes still to load."""
        reused: dict[str, torch.nn.Module] = {}
        incoming = 0
        for name, ident in self._component_ids(spec.folder).items():
            if name in spec.without:
                continue
            match = next((m for m, other in list(self._ids.items()) if ident.same_weights(other)), None)
            if match is not None and self._is_cached(match):
                reused[name] = match
            else:
                incoming += sum(p.stat().st_size for p in ident.folder.iterdir() if p.is_file())
        if self._estimate is not None:  # the plan's figure: real dtypes, activations included
            planned = self._estimate(spec, frozenset(reused))
            incoming = planned if planned is not None else incoming
        return reused, incoming

    def _component_ids(self, folder: Path) -> dict[str, ComponentId]:
        index = json.loads((folder / "model_index.json").read_text())
        ids: dict[str, ComponentId] = {}
        for name, value in index.items():
            if name.startswith("_") or not isinstance(value, list) or value[0] is None:
                continue
            ident = component_id(folder / name, f"{value[0]}.{value[1]}")
            if ident is not None:
                ids[name] = ident
        return ids

    # -- eviction -------------------------------------------------------------------------------

    def _evict(self, *, keep: frozenset[PipelineSpec], incoming: int) -> None:
        """Drop least recently used pipelines until what stays (plus ``incoming``) fits."""
        evicted = False
        while self.loaded_bytes() + incoming > self.budget_bytes:
            victim = next((s for s in self._pipelines if s not in keep), None)
            if victim is None:
                break
            log.info("evicting %s (%s) to stay within the model memory budget", victim.model, victim.class_name)
            del self._pipelines[victim]
            self._bytes = None
            evicted = True
        if evicted:
            _release_memory(self.device)

    def _unique_modules(self) -> Iterator[torch.nn.Module]:
        seen: set[int] = set()
        for pipe in self._pipelines.values():
            for module in pipe.components.values():
                if isinstance(module, torch.nn.Module) and id(module) not in seen:
                    seen.add(id(module))
                    yield module

    def _is_cached(self, module: torch.nn.Module) -> bool:
        return any(module is m for m in self._unique_modules())


def _own_components(spec: PipelineSpec) -> dict[str, Any]:
    """The components ``spec``'s family loads itself (``Family.own_components``)."""
    from openfal.backends.local.families import BY_MODEL

    family = BY_MODEL.get(spec.model, (None, None))[0]
    if family is None:
        return {}
    return {name: module for name, module in family.own_components(spec.model, spec.folder).items() if name not in spec.without}


def _pipeline_class(name: str) -> type[DiffusionPipeline]:
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, DiffusionPipeline)):
        raise ModelUnavailable(f"diffusers {diffusers.__version__} has no pipeline class {name}")
    return cls


def _derive(cls: type[DiffusionPipeline], base: DiffusionPipeline, without: frozenset[str]) -> DiffusionPipeline:
    """A ``cls`` pipeline over ``base``'s modules, with a fresh scheduler, and the
    settings ``base`` registered in its config (Wan's ``expand_timesteps`` and
    ``boundary_ratio``: they make the same folder a different model)."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    components = {k: v for k, v in base.components.items() if k in accepted}
    components.update({k: v for k, v in base.config.items() if k in accepted and k not in components and not k.startswith("_")})
    components.update({name: None for name in without if name in accepted})
    if "scheduler" in components:
        scheduler = components["scheduler"]
        components["scheduler"] = type(scheduler).from_config(scheduler.config)
    return cls(**components)


def _module_bytes(module: torch.nn.Module, device: torch.device | None = None) -> int:
    """Real bytes of the module's weights on ``device``'s kind (quantised ones at their
    packed size)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(tensor_bytes(t) for t in tensors if device is None or t.device.type == device.type)


def _release_memory(device: torch.device) -> None:
    release_memory(device)
