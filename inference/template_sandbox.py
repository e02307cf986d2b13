"""jinja2's immutable sandbox with a size limit on everything a template builds.

The sandbox stops a template from reaching Python internals, and ``chat_template`` stops one
that runs too long, but neither bounds memory: ``'x' * 10**9``, ``'x'|center(10**9)``,
``'%0999999999d' % 1`` or a string doubled with ``~`` in a loop each allocate gigabytes in a
single step, which the worker (holding the model) cannot afford. Here every step that can
make a large value is checked *before* it runs: string and list repetition, ``+`` and ``~``,
``%`` and ``str.format`` widths, integer powers, padding and joining methods and filters, and
the blocks, macros and whole output that jinja2 joins. Anything past ``MAX_CHARS`` (or an
integer past ``MAX_INT_BITS``) raises ``TemplateTooLarge``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import Environment, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_CHARS = 64 * 2**20  # a prompt of 16 million tokens or more: beyond any model's context
MAX_ITEMS = 2**20  # a list, tuple or dict; no chat template needs more than a few thousand
MAX_INT_BITS = 2**16  # Python refuses to print integers this long (sys.int_max_str_digits) anyway

_SEQUENCES = (list, tuple, dict)
_NUMBERS_IN_FORMAT = re.compile(r"\d+")
_MAX_JSON_INDENT = 64
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


class TemplateTooLarge(Exception):
    pass


def _refuse(what: str) -> TemplateTooLarge:
    return TemplateTooLarge(f"{what} would exceed {MAX_CHARS // 2**20} million characters")


def _check_size(size: int, what: str) -> None:
    if size > MAX_CHARS:
        raise _refuse(what)


def _check_length(value: Any, length: int, what: str) -> None:
    """``length`` is what ``value`` (or a value like it) would grow to."""
    if isinstance(value, str):
        _check_size(length, what)
    elif isinstance(value, _SEQUENCES) and length > MAX_ITEMS:
        raise TemplateTooLarge(f"{what} would exceed {MAX_ITEMS:,} items")


def _checked(value: Any) -> Any:
    if isinstance(value, (str, *_SEQUENCES)):
        _check_length(value, len(value), f"a value of {len(value):,} characters or items")
    return value


def _check_ints(values: Iterable[Any]) -> None:
    """A width, count or range this large can only make a value too large to build."""
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CHARS:
            raise _refuse(f"the number {value:,} as a size")


def _check_format(template: str) -> None:
    """A width or precision in a format string (``%09999999999d``, ``{:>999999999}``)."""
    for number in _NUMBERS_IN_FORMAT.findall(template):
        if len(number) > 9 or int(number) > MAX_CHARS:
            raise _refuse(f"the format width {number}")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                _check_length(seq, len(seq) * times, "repeating a value")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _refuse("a product of huge numbers")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and left.bit_length() * right > MAX_INT_BITS:
            raise _refuse(f"a power of {right:,}")
    elif operator == "+":
        if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            _check_length(left, len(left) + len(right), "adding two values")
    elif operator == "%" and isinstance(left, str):
        _check_format(left)
        if "*" in left:
            _check_ints(right if isinstance(right, tuple) else (right,))


def _joined_size(items: list[Any], separator: str) -> int:
    return sum(len(str(item)) for item in items) + len(separator) * max(len(items) - 1, 0)


def _check_replace(text: str, old: Any, new: Any) -> None:
    if isinstance(old, str) and isinstance(new, str):
        _check_size(len(text) + text.count(old) * (len(new) - len(old)), "replacing text")


def _check_string_method(method: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Check a call of a ``str`` method; returns the arguments to call it with (an iterable to
    join is read once, here)."""
    text, name = method.__self__, method.__name__
    if not isinstance(text, str):
        return args
    if name in ("format", "format_map"):
        _check_format(text)
    elif name == "expandtabs" and args and isinstance(args[0], int):
        _check_size(len(text) * args[0], "expanding tabs")
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, args[0], args[1])
    elif name == "join" and args:
        items = list(args[0])
        _check_size(_joined_size(items, text), "joining values")
        args = (items, *args[1:])
    elif name in _PADDING_METHODS and args and isinstance(args[0], int):
        _check_size(args[0], f"padding text with {name}")
    return args


def _check_filter(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _check_ints(args)
    _check_ints(kwargs.values())
    values = [a for a in args if not isinstance(a, (Context, Environment, EvalContext))]
    subject = values[0] if values else None
    if name == "format" and isinstance(subject, str):
        _check_format(subject)
    elif name == "replace" and len(values) >= 3 and isinstance(subject, str):
        _check_replace(subject, values[1], values[2])
    elif name == "wordwrap" and isinstance(subject, str):
        wrap = kwargs.get("wrapstring", values[4] if len(values) > 4 else "\n")
        _check_size(len(subject) * max(len(str(wrap)), 1), "wrapping text")
    elif name == "tojson" and isinstance(kwargs.get("indent", values[2] if len(values) > 2 else None), int):
        indent = kwargs.get("indent", values[2] if len(values) > 2 else 0)
        if indent > _MAX_JSON_INDENT:
            raise TemplateTooLarge(f"an indent of {indent:,} would repeat on every line")
    elif name == "list" and isinstance(subject, (str, *_SEQUENCES)) and len(subject) > MAX_ITEMS:
        raise TemplateTooLarge(f"a list would exceed {MAX_ITEMS:,} items")


def bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as a filter that refuses to build a value past the limits."""
    @functools.wraps(function)  # keeps jinja2's pass_context / pass_eval_context marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_filter(name, args, kwargs)
        return _checked(function(*args, **kwargs))

    return bounded


def _bounded_join(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> Any:
        items = list(value)
        if attribute is None:
            _check_size(_joined_size(items, d), "joining values")
        return _checked(function(eval_ctx, items, d, attribute))

    return join


def _bounded_indent(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> Any:
        _check_ints((width,))
        prefix = len(width) if isinstance(width, str) else width
        _check_size(len(str(s)) + (str(s).count("\n") + 1) * prefix, "indenting text")
        return _checked(function(s, width, first, blank))

    return indent


class _BoundedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """``a ~ b`` joins through ``environment.concat``, which checks the size first."""
        self.write("environment.concat(map(str, (")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write(")))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """``ImmutableSandboxedEnvironment`` where no value, block or output grows past ``MAX_CHARS``."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: bounded_filter(name, function) for name, function in self.filters.items()}
        self.filters["join"] = _bounded_join(self.filters["join"])
        self.filters["indent"] = _bounded_indent(self.filters["indent"])

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]  # jinja2's is "".join
        pieces = list(parts)
        _check_size(sum(len(piece) for piece in pieces), "the text")
        return "".join(pieces)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _checked(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_ints(args)
        _check_ints(kwargs.values())
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        if isinstance(getattr(method, "__self__", None), str):
            args = _check_string_method(method, args)
        return _checked(super().call(__context, __obj, *args, **kwargs))
