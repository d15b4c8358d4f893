"""What the gate knows about the classes of a file: what each provides and reads, and what its
installed base classes (torch.nn.Module, ...) give it, found by importing them.

Only installed packages (the standard library, site-packages) are imported: a workspace module is
code the LLM may have written, and the gate never runs it.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import importlib.util
import inspect
import os
import site
import sys
import sysconfig
import textwrap
from dataclasses import dataclass, field

from agent.checks.core import FUNCTIONS, nodes

# What torch.nn.Module gives every subclass (torch 2.13), used only when torch cannot be imported here.
MODULE_ATTRS = frozenset(
    "T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda "
    "double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter "
    "get_submodule half ipu load_state_dict modules mtia named_buffers named_children named_modules "
    "named_parameters parameters register_backward_hook register_buffer register_forward_hook "
    "register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook "
    "register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module "
    "register_parameter register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ "
    "set_extra_state set_submodule share_memory state_dict to to_empty train training type xpu "
    "zero_grad".split())
TORCH_MODULE = "torch.nn.Module"
# Calls through which an object gets an attribute without `obj.x = ...`.
REGISTERS = {"register_buffer", "register_parameter", "add_module", "register_module"}
# Names whose first argument is an object whose attribute `args[1]` is looked up or guarded.
_GUARDS = {"hasattr", "getattr"}


@dataclass
class ClassFacts:
    name: str
    in_file_bases: list[str] = field(default_factory=list)
    real_attrs: set[str] = field(default_factory=set)  # what resolved installed bases provide
    external: bool = False  # some base is neither in the file nor resolvable: it may set anything
    torch_module: bool = False  # derives from torch.nn.Module
    unresolved: list[str] = field(default_factory=list)  # installed bases not imported yet (lazy)
    provides: dict[str, list[int]] = field(default_factory=dict)  # attr -> lines that provide it
    reads: dict[str, int] = field(default_factory=dict)  # attr -> first unguarded read
    dynamic: bool = False  # __getattr__, setattr(self, name, ...), vars(self) writes: unknowable
    methods: dict[str, ast.FunctionDef] = field(default_factory=dict)  # the live definitions
    dead_provides: set[str] = field(default_factory=set)  # assigned in shadowed definitions only
    class_level: set[str] = field(default_factory=set)  # names the class body binds
    helper_provides: set[str] = field(default_factory=set)  # set by a function handed `self`
    passes_self: list[tuple[str, int | str, bool, int]] = field(default_factory=list)
    # (callee, position or keyword, called as an attribute, line): `helper(self)` in a method


# ---------------------------------------------------------------- scanning one method


@dataclass(frozen=True)
class FunctionInfo:
    """One walk of a function, shared by every check that looks at it."""
    nodes: tuple[ast.AST, ...]
    guards: frozenset[str]
    in_try: frozenset[int]
    loops: dict
    aug: frozenset[int]  # ids of `x.attr += ...` targets


@functools.lru_cache(maxsize=4096)
def function_info(fn: ast.AST) -> FunctionInfo:
    # Keyed by node identity: trees are cached by text, so a node stands for one parsed version.
    walked = tuple(ast.walk(fn))
    return FunctionInfo(walked, frozenset(guarded_names(walked)), frozenset(try_guarded(walked)),
                        _loop_strings(walked), frozenset(id(n.target) for n in walked
                                                         if isinstance(n, ast.AugAssign)))


def _walked(fn) -> tuple | list:
    return fn if isinstance(fn, (tuple, list)) else tuple(ast.walk(fn))


def guarded_names(fn: ast.AST) -> set[str]:
    """Attributes the function looks up defensively: hasattr(o, "x"), getattr(o, "x", default),
    "x" in o.__dict__ / vars(o), o.__dict__.get("x"). Their plain reads there are guarded."""
    found = set()
    for node in _walked(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _GUARDS \
                and len(node.args) >= 2 and _const_str(node.args[1]) is not None:
            if node.func.id == "hasattr" or len(node.args) >= 3:
                found.add(node.args[1].value)
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                and _const_str(node.left) is not None:
            found.add(node.left.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "get" and _is_dict_of(node.func.value) and node.args \
                and _const_str(node.args[0]) is not None:
            found.add(node.args[0].value)
    return found


def try_guarded(fn: ast.AST) -> set[int]:
    """ids of nodes inside a `try` body whose handlers catch AttributeError."""
    found: set[int] = set()
    for node in _walked(fn):
        if isinstance(node, ast.Try) and any(_catches(h, "AttributeError") for h in node.handlers):
            for stmt in node.body:
                found.update(id(n) for n in ast.walk(stmt))
    return found


def _catches(handler: ast.ExceptHandler, name: str) -> bool:
    if handler.type is None:
        return True
    caught = ast.unparse(handler.type)
    return any(n in caught for n in (name, "Exception"))


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_dict_of(node: ast.AST, me: str | None = None) -> bool:
    """`o.__dict__` or `vars(o)` (of `me` when given)."""
    if isinstance(node, ast.Attribute) and node.attr == "__dict__":
        return me is None or (isinstance(node.value, ast.Name) and node.value.id == me)
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "vars" \
        and len(node.args) == 1 and (me is None or _is_name(node.args[0], me))


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _loop_strings(fn: ast.AST) -> dict[str, list[str]]:
    """`for name in ("a", "b"):` loop variables over literal strings, with their values."""
    found: dict[str, list[str]] = {}
    for node in _walked(fn):
        if isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name) \
                and isinstance(node.iter, (ast.List, ast.Tuple, ast.Set)):
            values = [_const_str(e) for e in node.iter.elts]
            if values and None not in values:
                found.setdefault(node.target.id, []).extend(values)
    return found


def _names_of(arg: ast.AST | None, loops: dict[str, list[str]]) -> list[str] | None:
    """The attribute names a name argument can be; None when it cannot be known."""
    if _const_str(arg) is not None:
        return [arg.value]
    if isinstance(arg, ast.Name) and arg.id in loops:
        return loops[arg.id]
    return None


def _name_argument(call: ast.Call, position: int) -> ast.AST | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == "name"), None)


def scan_method(method: ast.FunctionDef, facts: ClassFacts, *, dead: bool = False) -> None:
    """Add what one method reads and provides on its first argument to `facts`."""
    decorators = {ast.unparse(d) for d in method.decorator_list}
    args = method.args.posonlyargs + method.args.args
    if not args or "staticmethod" in decorators:
        return
    me = args[0].arg
    provides: dict[str, int] = {}
    info = function_info(method)
    if "classmethod" in decorators:  # `cls.scale = 2` gives every instance a scale
        for node in info.nodes:
            if isinstance(node, ast.Attribute) and _is_name(node.value, me) and isinstance(node.ctx, ast.Store):
                facts.provides.setdefault(node.attr, []).append(node.lineno)
        return
    guards, in_try, loops, aug = info.guards, info.in_try, info.loops, info.aug
    for node in info.nodes:
        if isinstance(node, ast.Attribute) and _is_name(node.value, me):
            if isinstance(node.ctx, ast.Load) or id(node) in aug:
                # `self.n += 1` reads self.n first: it provides nothing that was not there
                if node.attr not in guards and id(node) not in in_try and not dead:
                    facts.reads.setdefault(node.attr, node.lineno)
            elif isinstance(node.ctx, ast.Store):
                provides.setdefault(node.attr, node.lineno)
        elif isinstance(node, ast.Call):
            _scan_call(node, me, loops, provides, facts, dead)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store) \
                and _is_dict_of(node.value, me):  # self.__dict__["x"] = ...
            names = _names_of(node.slice, loops)
            if names is None:
                facts.dynamic = True
            for name in names or ():
                provides.setdefault(name, node.lineno)
    for name, line in provides.items():
        if dead:
            facts.dead_provides.add(name)
        else:
            facts.provides.setdefault(name, []).append(line)


def _scan_call(node: ast.Call, me: str, loops, provides: dict[str, int], facts: ClassFacts,
               dead: bool) -> None:
    func = node.func
    named = None  # the argument that names the attribute being set, when this call sets one
    if isinstance(func, ast.Attribute) and func.attr in REGISTERS and _is_name(func.value, me):
        named = _name_argument(node, 0)
    elif isinstance(func, ast.Attribute) and func.attr == "__setattr__":
        if _is_name(func.value, me) or (isinstance(func.value, ast.Call) and _is_name(func.value.func, "super")):
            named = _name_argument(node, 0)  # self.__setattr__("x", v), super().__setattr__("x", v)
        elif node.args and _is_name(node.args[0], me):
            named = _name_argument(node, 1)  # object.__setattr__(self, "x", v)
    elif _is_name(func, "setattr") and node.args and _is_name(node.args[0], me):
        named = _name_argument(node, 1)
        if named is None:
            facts.dynamic = True
    elif isinstance(func, ast.Attribute) and func.attr in ("update", "setdefault", "__setitem__") \
            and _is_dict_of(func.value, me):
        facts.dynamic = True  # self.__dict__.update(kw), vars(self).update(kw)
        return
    if named is not None:
        names = _names_of(named, loops)
        if names is None:
            facts.dynamic = True
        for name in names or ():
            provides.setdefault(name, node.lineno)
        return
    if dead:
        return
    callee = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if callee is None or callee in ("setattr", "super", "isinstance", "print", "type", "id", "repr", "str"):
        return
    for pos, arg in enumerate(node.args):
        if _is_name(arg, me):
            facts.passes_self.append((callee, pos, isinstance(func, ast.Attribute), node.lineno))
    for kw in node.keywords:
        if kw.arg and _is_name(kw.value, me):
            facts.passes_self.append((callee, kw.arg, isinstance(func, ast.Attribute), node.lineno))
    if isinstance(func, ast.Attribute) and func.attr == "apply" and _is_name(func.value, me) \
            and node.args and isinstance(node.args[0], ast.Name):  # nn.Module.apply(fn) calls fn(self)
        facts.passes_self.append((node.args[0].id, 0, False, node.lineno))


# ---------------------------------------------------------------- one class


def bound_names(node: ast.stmt) -> list[tuple[str, int]]:
    """Names a class-body statement binds (methods, class attributes, nested classes)."""
    if isinstance(node, FUNCTIONS + (ast.ClassDef,)):
        return [(node.name, node.lineno)]
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        return [((a.asname or a.name).split(".")[0], node.lineno) for a in node.names]
    elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For)):  # conditional class attributes
        return [b for part in ("body", "orelse", "finalbody") for s in getattr(node, part, None) or ()
                for b in bound_names(s)] + [b for h in getattr(node, "handlers", ()) for s in h.body
                                             for b in bound_names(s)]
    return [(n.id, node.lineno) for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _slots(cls: ast.ClassDef) -> list[str]:
    for node in cls.body:
        if isinstance(node, ast.Assign) and any(_is_name(t, "__slots__") for t in node.targets):
            return [n.value for n in ast.walk(node.value) if _const_str(n) is not None]
    return []


def _all_live(node: ast.FunctionDef) -> bool:
    """Decorated redefinitions (@x.setter, @overload) all stay reachable."""
    return any(w in ast.unparse(d) for d in node.decorator_list
               for w in ("setter", "getter", "deleter", "overload", "register"))


def facts_of(cls: ast.ClassDef) -> ClassFacts:
    """Provides and reads of one class, from its own body only (bases are resolved later)."""
    facts = ClassFacts(cls.name)
    definitions: dict[str, list[ast.FunctionDef]] = {}
    for node in cls.body:
        for name, line in bound_names(node):
            facts.provides.setdefault(name, []).append(line)
            facts.class_level.add(name)
        if isinstance(node, FUNCTIONS):
            definitions.setdefault(node.name, []).append(node)
    live, dead = [], []
    for name, defs in definitions.items():
        facts.methods[name] = defs[-1]
        keep = [d for d in defs[:-1] if _all_live(d)]
        live += keep + [defs[-1]]
        dead += [d for d in defs[:-1] if d not in keep]
    facts.dynamic = "__getattr__" in facts.methods or "__getattribute__" in facts.methods
    for name in _slots(cls):
        facts.provides.setdefault(name, []).append(cls.lineno)
    for method in live:
        scan_method(method, facts)
    for method in dead:
        scan_method(method, facts, dead=True)
    facts.dead_provides -= set(facts.provides)
    if "__new__" in facts.methods:  # `self = object.__new__(cls); self.x = ...` sets attributes too
        for node in ast.walk(facts.methods["__new__"]):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                facts.provides.setdefault(node.attr, []).append(node.lineno)
    return facts


# ---------------------------------------------------------------- the whole file


def import_names(walked) -> dict[str, str]:
    """Local name -> dotted origin for the module's imports (`nn` -> `torch.nn`)."""
    found = {}
    for node in walked:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    found[a.asname] = a.name
                else:
                    found[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                found[a.asname or a.name] = f"{node.module}.{a.name}"
    return found


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


@functools.lru_cache(maxsize=16)
def class_facts(source: str) -> dict[str, ClassFacts]:
    """Facts of every class in the file, bases resolved (cached by text: `old` is reused)."""
    classes = [n for n in nodes(source) if isinstance(n, ast.ClassDef)]
    names = {c.name for c in classes}
    imports = import_names(nodes(source))
    found = {}
    for cls in classes:
        facts = facts_of(cls)
        for base in cls.bases:
            _add_base(facts, base, names, imports)
        found[cls.name] = facts
    _add_helper_provides(nodes(source), found)
    return found


def _add_base(facts: ClassFacts, base: ast.AST, in_file: set[str], imports: dict[str, str]) -> None:
    spelled = _dotted(base)
    if spelled is None:
        facts.external = True  # a computed base: `class A(make_base()):`
        return
    if spelled in in_file:
        facts.in_file_bases.append(spelled)
        return
    head, _, rest = spelled.partition(".")
    origin = imports.get(head) or (f"builtins.{head}" if hasattr(builtins, head) else None)
    full = f"{origin}.{rest}" if origin and rest else origin
    if full:
        facts.unresolved.append(full)  # imported only when a read needs it: importing torch takes seconds
    else:
        facts.external = True


def resolve_bases(facts: ClassFacts) -> None:
    """Import the class's installed bases (once) and add what they provide."""
    for full in facts.unresolved:
        real = real_class(full)
        if real is not None:
            facts.real_attrs |= real[0]
            facts.torch_module = facts.torch_module or real[1]
        elif _is_torch_module_name(full):
            facts.real_attrs |= MODULE_ATTRS  # torch is not importable here: what it is known to give
            facts.torch_module = True
        else:
            facts.external = True
    facts.unresolved = []


def _is_torch_module_name(full: str) -> bool:
    return full in (TORCH_MODULE, "torch.nn.modules.module.Module", "torch.nn.modules.Module")


def _add_helper_provides(walked: tuple[ast.AST, ...], classes: dict[str, ClassFacts]) -> None:
    """Attributes set by an in-file function a method hands `self` to (`init_weights(self)`)."""
    if not any(f.passes_self for f in classes.values()):
        return
    by_name: dict[str, list[ast.FunctionDef]] = {}
    for node in walked:
        if isinstance(node, FUNCTIONS):
            by_name.setdefault(node.name, []).append(node)
    for facts in classes.values():
        for callee, where, as_attribute, line in facts.passes_self:
            for fn in by_name.get(callee, ()):
                param = _parameter(fn, where, as_attribute)
                if param is None:
                    continue
                for node in function_info(fn).nodes:
                    if isinstance(node, ast.Attribute) and _is_name(node.value, param) \
                            and isinstance(node.ctx, ast.Store):
                        facts.provides.setdefault(node.attr, []).append(line)
                        facts.helper_provides.add(node.attr)
                    elif isinstance(node, ast.Call) and _is_name(node.func, "setattr") and node.args \
                            and _is_name(node.args[0], param):
                        names = _names_of(_name_argument(node, 1), _loop_strings(fn))
                        if names is None:
                            facts.dynamic = True
                        for name in names or ():
                            facts.provides.setdefault(name, []).append(line)
                            facts.helper_provides.add(name)


def _parameter(fn: ast.FunctionDef, where: int | str, as_attribute: bool) -> str | None:
    params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    if isinstance(where, str):
        return where if where in params + [a.arg for a in fn.args.kwonlyargs] else None
    decorators = {ast.unparse(d) for d in fn.decorator_list}
    bound = as_attribute and params and params[0] in ("self", "cls") and "staticmethod" not in decorators
    index = where + 1 if bound else where
    return params[index] if index < len(params) else None


def lineage(name: str, classes: dict[str, ClassFacts], seen: frozenset = frozenset(), *,
            resolve: bool = True):
    """(attributes the class and its in-file and installed bases provide, whether a base is unknown).

    With resolve=False nothing is imported: installed bases not resolved yet count as unknown.
    """
    facts = classes[name]
    if resolve:
        resolve_bases(facts)
    provided = set(facts.provides) | facts.real_attrs
    external = facts.external or bool(facts.unresolved)
    for base in facts.in_file_bases:
        if base not in seen and base in classes and base != name:
            more, ext = lineage(base, classes, seen | {name}, resolve=resolve)
            provided |= more
            external = external or ext
    return provided, external


def ancestors(name: str, classes: dict[str, ClassFacts], seen: frozenset = frozenset()) -> set[str]:
    found = set()
    for base in classes[name].in_file_bases:
        if base in classes and base not in seen and base != name:
            found |= {base} | ancestors(base, classes, seen | {name})
    return found


def descendants(name: str, classes: dict[str, ClassFacts]) -> set[str]:
    found, frontier = set(), {name}
    while frontier:
        frontier = {c for c, f in classes.items() if set(f.in_file_bases) & frontier} - found - {name}
        found |= frontier
    return found


def is_torch_module(name: str, classes: dict[str, ClassFacts]) -> bool:
    family = {name} | ancestors(name, classes)
    for c in family:
        resolve_bases(classes[c])
    return any(classes[c].torch_module for c in family)


# ---------------------------------------------------------------- installed base classes


def _install_roots() -> tuple[str, ...]:
    paths = {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        paths |= set(site.getsitepackages()) | {site.getusersitepackages()}
    except AttributeError:  # a virtualenv's old site module
        pass
    return tuple(os.path.realpath(p) + os.sep for p in paths if p)


def _installed(module: str) -> bool:
    """True when `module`'s top-level package is the standard library or an installed package."""
    top = module.split(".")[0]
    if top in sys.builtin_module_names:
        return True
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    origin = spec.origin if spec.origin not in (None, "namespace") else \
        next(iter(spec.submodule_search_locations or ()), None)
    if origin in ("built-in", "frozen"):
        return True
    return origin is not None and os.path.realpath(origin).startswith(_install_roots())


@functools.lru_cache(maxsize=256)
def real_class(dotted: str) -> tuple[frozenset[str], bool] | None:
    """(every attribute instances of the installed class `dotted` get, whether it is an nn.Module),
    or None when it cannot be known: not installed, not a class, or built from code the gate cannot
    read (a C extension type, attributes set under computed names)."""
    parts = dotted.split(".")
    obj = None
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        if not _installed(module):
            return None
        try:
            obj = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - any failure to import means "unknown", never a crash
            continue
        for part in parts[i:]:
            obj = getattr(obj, part, None)
        break
    if not isinstance(obj, type):
        return None
    attrs = set(dir(obj))
    torch_module = any(f"{k.__module__}.{k.__qualname__}" == "torch.nn.modules.module.Module"
                       for k in obj.__mro__)
    for klass in obj.__mro__:
        if klass.__module__ == "builtins":
            continue
        facts = _facts_of_installed(klass)
        if facts is None:
            return None
        is_module = f"{klass.__module__}.{klass.__qualname__}" == "torch.nn.modules.module.Module"
        if facts.dynamic and not is_module:  # Module's __getattr__ serves only what is registered
            return None
        attrs |= set(facts.provides)
    return frozenset(attrs), torch_module


def _facts_of_installed(klass: type) -> ClassFacts | None:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    cls = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    return facts_of(cls) if cls is not None else None
