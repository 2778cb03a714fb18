"""sentence-transformers' ``Router`` (and legacy ``Asym``) modules: one module pipeline per route, and the route
that a task (``encode_query``, ``encode_document``, plain ``encode``) resolves to, in sentence-transformers' order.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from core.model_files import read_json
from core.sentence_modules import FOLDER_KEYS

#: The module types that route inputs (sentence-transformers 6's ``Router``; ``Asym``, its legacy name).
ROUTER_KINDS = ("Router", "Asym")
#: The modality sentence-transformers infers for text inputs, which route mappings may name.
TEXT_MODALITY = "text"


@dataclass(frozen=True)
class Routes:
    """A ``Router``/``Asym`` module, read from its folder: ``modules``, route name -> that route's whole module list
    (``modules.json`` entries, the Router replaced by the route's own modules, paths relative to the model folder);
    ``default_route``, ``route_mappings`` ((task, modality) -> route) and ``allow_empty_key`` as sentence-transformers
    saves them (``router_config.json``, or a legacy ``Asym``'s ``config.json``)."""

    modules: dict[str, list[dict]]
    default_route: str | None = None
    route_mappings: dict[tuple, str] = field(default_factory=dict)
    allow_empty_key: bool = True

    @property
    def names(self) -> list[str]:
        return list(self.modules)

    def resolve(self, task: str | None) -> str:
        """The route sentence-transformers takes for text with ``task`` (``encode(task=...)``: None for plain
        ``encode``, ``query`` for ``encode_query``, ``document`` for ``encode_document``), in its order: the route
        mappings of (task, text), (task, any), (any, text), (any, any); a route named like the task; a route named
        ``text``; the default route. A task that finds no route is an error listing the routes."""
        for key in ((task, TEXT_MODALITY), (task, None), (None, TEXT_MODALITY), (None, None)):
            if key in self.route_mappings:
                return self.route_mappings[key]
        if task and task in self.modules:
            return task
        if TEXT_MODALITY in self.modules:
            return TEXT_MODALITY
        if task is None and self.default_route is not None:
            return self.default_route
        raise ValueError(f"no route of this model for task {task!r}: its routes are {', '.join(self.names)}"
                         + (f" (mapped: {self.route_mappings})" if self.route_mappings else "")
                         + ("" if task is not None else "; it has no default route, so name one"))


def _route_key(text: str) -> tuple:
    """A saved route-mapping key, e.g. ``"('query', 'text')"``, as the (task, modality) tuple it stands for."""
    try:
        key = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        key = None
    if not (isinstance(key, tuple) and len(key) == 2):
        raise ValueError(f"route mapping key {text!r} is not a (task, modality) pair")
    task, modality = key
    return task, tuple(sorted(modality)) if isinstance(modality, tuple) else modality


def read_routes(folder: Path) -> Routes | None:
    """The routes of a folder whose ``modules.json`` has a ``Router`` or ``Asym`` module, or None without one.
    More than one router, or a router inside a route, is an error naming it."""
    modules = read_json(folder / "modules.json")
    if modules is None:
        return None
    modules = sorted(modules, key=lambda m: int(m.get("idx", 0)))
    routers = [i for i, m in enumerate(modules) if str(m.get("type", "")).rsplit(".", 1)[-1] in ROUTER_KINDS]
    if not routers:
        return None
    if len(routers) > 1:
        raise ValueError(f"model {folder}: {len(routers)} Router/Asym modules; SimLens explains models with one")
    at = routers[0]
    path = str(modules[at].get("path", ""))
    config = read_json(folder / path / "router_config.json") or read_json(folder / path / "config.json")
    if not config or "types" not in config or "structure" not in config:
        raise ValueError(f"model {folder}: its {modules[at].get('type')} module has no router_config.json (or "
                         f"legacy config.json) with types and structure")
    where = folder / path / ("router_config.json" if (folder / path / "router_config.json").exists() else "config.json")
    FOLDER_KEYS["router_config.json"].check(config, where)
    types = config["types"]
    parameters = FOLDER_KEYS["Router parameters"].check(config.get("parameters") or {}, f"{where} (parameters)")
    routes: dict[str, list[dict]] = {}
    for name, ids in config["structure"].items():
        inner = [{"type": types[i], "path": str(Path(path, i)) if path else str(i)} for i in ids]
        nested = [m["type"] for m in inner if str(m["type"]).rsplit(".", 1)[-1] in ROUTER_KINDS]
        if nested:
            raise ValueError(f"model {folder}: route {name!r} has its own {nested[0]}; nested routers are not supported")
        flat = [*modules[:at], *inner, *modules[at + 1 :]]
        routes[name] = [{**m, "idx": i} for i, m in enumerate(flat)]
    if not routes:
        raise ValueError(f"model {folder}: its {modules[at].get('type')} module has no routes")
    mappings = {_route_key(k): v for k, v in (parameters.get("route_mappings") or {}).items()}
    unknown = sorted({v for v in mappings.values() if v not in routes}
                     | ({parameters["default_route"]} - set(routes) if parameters.get("default_route") else set()))
    if unknown:
        raise ValueError(f"model {folder}: its router names route(s) {', '.join(unknown)}, which it does not have "
                         f"({', '.join(routes)})")
    allow_empty = bool(parameters.get("allow_empty_key", True))
    default = parameters.get("default_route") or (next(iter(routes)) if allow_empty else None)
    return Routes(modules=routes, default_route=default, route_mappings=mappings, allow_empty_key=allow_empty)


def local_route_names(name_or_path: str) -> list[str]:
    """The routes of a model that is a local folder with a Router/Asym module, read without loading it; [] for
    others (and for a folder whose router cannot be read: loading it says why)."""
    folder = Path(str(name_or_path)).expanduser()
    if not folder.is_dir():
        return []
    try:
        routes = read_routes(folder)
    except (ValueError, OSError):
        return []
    return routes.names if routes is not None else []
