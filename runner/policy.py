"""The static policy: what a variant file may say, checked on its source before any of it runs.

A variant file is code from someone who wants to win, so it may only *describe a module*: import the variant API,
torch's tensor and module machinery and pure-Python helpers, define classes and functions, and declare ``VARIANT``.
It may not reach into other modules' state, do I/O, start processes, register hooks, build code at run time, read
the environment or the call stack, or sever the autograd graph (which would hide a leak from the causality check).
Each refusal is one line ``FILE:LINE: rule``. docs/security.md explains the threat model.

Why not RestrictedPython: it rewrites code to guard every attribute access at run time, which neither fits tensor
code that runs millions of times nor stops torch's own escape hatches; an allow-list of imports and a deny-list of
the names that reach those hatches does, and runs before the file is executed at all.
"""

from __future__ import annotations

import ast

from arena.core.errors import ArenaError

# Modules a variant may import (and their submodules where listed with a trailing dot).
ALLOWED_IMPORTS = ("arena.api", "torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "math", "typing",
                   "collections.abc", "dataclasses", "__future__", "functools", "itertools", "numbers", "enum")
# Names that no variant needs and that reach I/O, processes, other modules' state, hooks, code building, the call
# stack, global RNG/determinism switches or a way around autograd. Checked as attribute names and bare names.
FORBIDDEN_NAMES = frozenset({
    # code building and reflection
    "eval", "exec", "compile", "__import__", "globals", "locals", "vars", "getattr", "setattr", "delattr",
    "breakpoint", "input", "open", "memoryview", "classmethod", "staticmethod", "property", "type", "object",
    "help", "exit", "quit",
    # torch escape hatches: I/O, native code, dispatch, global state, other processes
    "load", "save", "from_file", "hub", "ops", "library", "classes", "utils", "jit", "package", "distributed",
    "multiprocessing", "backends", "compiler", "overrides", "fx", "export", "onnx", "profiler", "cuda", "mps",
    "xpu", "storage", "untyped_storage", "set_", "share_memory_", "manual_seed", "seed", "initial_seed",
    "set_rng_state", "get_rng_state", "random", "use_deterministic_algorithms", "set_default_dtype",
    "set_default_device", "set_grad_enabled", "set_flush_denormal", "set_num_threads", "set_printoptions",
    # hooks and autograd surgery
    "register_hook", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_backward_hook", "register_full_backward_pre_hook", "register_module_forward_hook",
    "register_module_forward_pre_hook", "register_state_dict_pre_hook", "register_load_state_dict_post_hook",
    "register_buffer", "register_parameter", "register_module", "autograd", "Function", "no_grad", "enable_grad",
    "inference_mode", "detach_", "data", "grad", "grad_fn", "requires_grad_", "retain_grad", "backward",
    "item", "tolist", "numpy", "is_grad_enabled", "is_inference_mode_enabled", "is_autocast_enabled",
    "is_current_stream_capturing", "apply", "load_state_dict", "state_dict", "named_parameters", "parameters",
    "modules", "named_modules", "children", "zero_grad",
    # modules that other modules carry as attributes (torch.os is os): reached without an import
    "os", "sys", "subprocess", "builtins", "importlib", "io", "shutil", "pathlib", "socket", "ctypes", "pickle",
    "inspect", "gc", "threading", "signal", "tempfile", "glob", "platform", "types", "weakref", "copyreg",
    "marshal", "warnings", "logging", "contextlib", "sysconfig", "site", "runpy", "pkgutil", "zipimport",
})
# ``.detach()`` is allowed only to hand a diagnostic to ``self.last_share`` (it cannot reach the output there).
DETACH_TARGET = "last_share"


class _Visitor(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.aliases: set[str] = set()  # names bound to imported modules: their attributes are read-only
        self.detach_ok = False  # inside ``self.last_share = ….detach()``

    def refuse(self, node: ast.AST, rule: str) -> None:
        raise ArenaError(f"{self.path}:{getattr(node, 'lineno', 0)}: {rule} (variant files may only describe a "
                         "module; see docs/security.md)")

    # -- imports --------------------------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._allowed(node, alias.name)
            self.aliases.add((alias.asname or alias.name).split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.refuse(node, "relative import")
        module = node.module or ""
        for alias in node.names:
            if alias.name == "*":
                self.refuse(node, f"'from {module} import *'")
            full = f"{module}.{alias.name}"
            if module == "arena.api" or module == "__future__":
                continue
            if full in ALLOWED_IMPORTS:  # a submodule, e.g. from torch import nn
                self.aliases.add(alias.asname or alias.name)
                continue
            self._allowed(node, module)
            self._name(node, alias.name)

    def _allowed(self, node: ast.AST, module: str) -> None:
        if module not in ALLOWED_IMPORTS:
            self.refuse(node, f"imports '{module}'; allowed: {', '.join(ALLOWED_IMPORTS)}")

    # -- names, attributes, strings -------------------------------------------------------------------------------
    def _name(self, node: ast.AST, name: str, private_ok: bool = True) -> None:
        if name.startswith("__") and name != "__init__":
            self.refuse(node, f"uses the dunder name '{name}'")
        if name in FORBIDDEN_NAMES:
            self.refuse(node, f"uses '{name}', which reaches outside the module's own computation")
        if not private_ok and name.startswith("_") and name != "__init__":
            self.refuse(node, f"uses the private name '{name}' of another module or object")

    def visit_Name(self, node: ast.Name) -> None:
        self._name(node, node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "detach" and not self.detach_ok:
            self.refuse(node, "calls .detach() outside 'self.last_share = ….detach()' (it would hide a leak "
                              "from the gradient check)")
        own = isinstance(node.value, ast.Name) and node.value.id == "self"
        self._name(node, node.attr, private_ok=own)
        self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant):
            return  # a docstring or a bare constant does nothing
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and "__" in node.value:
            self.refuse(node, "has a string with '__' (a route to dunder attributes)")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name.startswith("__") and node.name != "__init__":
            self.refuse(node, f"defines the special method '{node.name}' (only __init__ and forward are needed)")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
            if name == "Tensor":
                self.refuse(node, "subclasses torch.Tensor (a tensor subclass can intercept every torch call)")
        if node.keywords:
            self.refuse(node, "passes class keywords (metaclasses)")
        self.generic_visit(node)

    # -- statements -----------------------------------------------------------------------------------------------
    def visit_Global(self, node: ast.Global) -> None:
        self.refuse(node, "uses 'global' (module state shared between runs)")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.refuse(node, "uses 'nonlocal'")

    def _target(self, node: ast.AST, target: ast.expr) -> None:
        """Attributes may be set on ``self`` only; nothing may be set inside an imported module (patching)."""
        for item in target.elts if isinstance(target, ast.Tuple | ast.List) else [target]:
            base, through_attr = item, False
            while isinstance(base, ast.Attribute | ast.Subscript | ast.Starred):
                through_attr = through_attr or isinstance(base, ast.Attribute)
                base = base.value
            if isinstance(base, ast.Name) and base.id in self.aliases and base is not item:
                self.refuse(node, f"assigns into the imported module '{base.id}' (patching)")
            if through_attr and not (isinstance(base, ast.Name) and base.id == "self"):
                self.refuse(node, "sets an attribute of something other than self (patching)")

    def visit_Assign(self, node: ast.Assign) -> None:
        if (len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute)
                and node.targets[0].attr == DETACH_TARGET and _is_detach_call(node.value)):
            self.visit(node.targets[0])
            self.detach_ok = True
            try:
                self.visit(node.value)
            finally:
                self.detach_ok = False
            return
        for target in node.targets:
            self._target(node, target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._target(node, node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._target(node, node.target)
        self.generic_visit(node)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            self._target(node, target)
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        for handler in node.handlers:  # a bare except or BaseException would swallow the harness's limits
            if handler.type is None or (isinstance(handler.type, ast.Name)
                                        and handler.type.id in ("BaseException", "SystemExit", "KeyboardInterrupt")):
                self.refuse(handler, "catches BaseException (or everything)")
        self.generic_visit(node)

    visit_TryStar = visit_Try  # type: ignore[assignment]


def _is_detach_call(value: ast.expr) -> bool:
    """``<expr>.detach()`` or ``<expr>.detach().<method>(...)`` chains ending in a detach."""
    node = value
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "detach" and not node.args and not node.keywords:
            return True
        node = node.func.value
    return False


def audit_source(source: str, path: str) -> None:
    """Raise ArenaError ``PATH:LINE: rule`` at the first thing the policy refuses; return quietly otherwise."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise ArenaError(f"{path}:{exc.lineno}: does not parse: {exc.msg}") from None
    _Visitor(path).visit(tree)
