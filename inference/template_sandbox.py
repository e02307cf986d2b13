"""jinja2's immutable sandbox with a size limit on everything a template builds.

The sandbox stops a template from reaching Python internals, and ``chat_template`` stops one
that runs too long, but neither bounds memory: ``'x' * 10**9``, ``'x'|center(10**9)``,
``'%0999999999d' % 1`` or a string doubled with ``~`` in a loop each allocate gigabytes in a
single step, which the worker (holding the model) cannot afford. Here every step that can
make a large value is checked *before* it runs, on the size of the whole result (not of each
field or item): string and list repetition, ``+`` and ``~``, ``%`` and ``str.format`` (the
widths, precisions and values of all fields together), integer powers, padding, case and
joining methods and filters, ``split`` and ``splitlines`` (the number of items), the text of a
list or dict (``str``, ``|string``, ``|tojson``, ``|pprint``, output; estimated from its
contents, shared items counted each time they appear), and the blocks, macros and whole output
that jinja2 joins. Anything past ``MAX_CHARS`` (a list past ``MAX_ITEMS`` items, an integer
past ``MAX_INT_BITS``) raises ``TemplateTooLarge``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, ItemsView, Iterable, KeysView, Mapping, ValuesView
from itertools import islice
from string import Formatter
from typing import Any

from jinja2 import Environment, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace
from markupsafe import Markup

MAX_CHARS = 64 * 2**20  # a prompt of 16 million tokens or more: beyond any model's context
MAX_ITEMS = 2**20  # a list, tuple or dict; no chat template needs more than a few thousand
MAX_INT_BITS = 2**16  # Python refuses to print integers this long (sys.int_max_str_digits) anyway

_SEQUENCES = (list, tuple, dict)
_MAX_JSON_INDENT = 64
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_CASE_METHODS = frozenset({"upper", "lower", "title", "capitalize", "swapcase", "casefold"})
_STRINGIFYING_FILTERS = frozenset({
    "string", "upper", "lower", "title", "capitalize", "trim", "center", "truncate", "wordcount", "wordwrap",
    "striptags", "urlize", "escape", "e", "forceescape", "safe", "replace", "indent",
})
_WHITESPACE = (  # every character str.split() splits on
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_HTML_SPECIAL = "&<>\"'"  # each becomes at most 5 characters (&amp; &#34; &#39;)
_NUMBER_SIZE = 450  # any float, '%f' or '{:,f}' of 1e308 included, without its width or precision
_OTHER_SIZE = 256  # the text of a macro, a loop, a cycler, a generator, ...
_PRETTY_BYTES = 32  # pprint splits long strings into words and re-reprs every level: bytes per character
_EXACT_QUOTING = 2**20  # strings whose quoted size could be larger are measured, not bounded
_PRINTF_FIELD = re.compile(r"[-+ #0]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.S)
_FORMAT_SPEC_NUMBERS = re.compile(r"\d+")


class TemplateTooLarge(Exception):
    pass


def _refuse(what: str) -> TemplateTooLarge:
    return TemplateTooLarge(f"{what} would exceed {MAX_CHARS // 2**20} million characters")


def _check_size(size: int, what: str) -> None:
    if size > MAX_CHARS:
        raise _refuse(what)


def _check_items(count: int, what: str) -> None:
    if count > MAX_ITEMS:
        raise TemplateTooLarge(f"{what} would exceed {MAX_ITEMS:,} items")


def _check_length(value: Any, length: int, what: str) -> None:
    """``length`` is what ``value`` (or a value like it) would grow to."""
    if isinstance(value, str):
        _check_size(length, what)
    elif isinstance(value, _SEQUENCES):
        _check_items(length, what)


def _checked(value: Any) -> Any:
    if isinstance(value, (str, *_SEQUENCES)):
        _check_length(value, len(value), f"a value of {len(value):,} characters or items")
    return value


def _check_ints(values: Iterable[Any]) -> None:
    """A width, count or range this large can only make a value too large to build."""
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CHARS:
            raise _refuse(f"the number {value:,} as a size")


def _width(digits: str) -> int:
    """A width or precision written in a format string (``%09999999999d``, ``{:>999999999}``)."""
    if len(digits) > 9 or int(digits) > MAX_CHARS:
        raise _refuse(f"the format width {digits[:20]}")
    return int(digits)


def _quoted_size(text: str) -> int:
    """At least ``len(repr(text))``, ``len(ascii(text))`` and ``len(json.dumps(text))``."""
    if text.isascii() and text.isprintable():
        return len(text) + 2 + text.count("\\") + text.count('"') + text.count("'")
    if 12 * len(text) <= _EXACT_QUOTING:  # \ud83d\ude00: a character escaped in JSON is at most 12
        return 12 * len(text) + 2
    size = 2
    for start in range(0, len(text), 2**16):  # measured a piece at a time, in little memory
        piece = text[start:start + 2**16]
        size += max(len(repr(piece)), len(ascii(piece)), len(json.dumps(piece))) + piece.count("'")
    return size


def _contents(value: Any) -> tuple[bool, Iterable[Any]] | None:
    """``(pairs, items)`` of a value whose text shows its contents, or ``None``."""
    if isinstance(value, Namespace):
        return True, value._Namespace__attrs.items()  # type: ignore[attr-defined]
    if isinstance(value, (Mapping, ItemsView)):
        return True, value.items() if isinstance(value, Mapping) else value
    if isinstance(value, (list, tuple, set, frozenset, KeysView, ValuesView)):
        return False, value
    return None


class _Sizer:
    """Upper bounds on the text of values (``str``, ``repr``, JSON with ``indent`` or ``pprint``),
    found from their contents without building it; refuses as soon as one passes ``MAX_CHARS``.
    A list holding the same string three times counts it three times, as its text would."""

    def __init__(self, what: str, indent: int = 0, pretty: bool = False) -> None:
        self.what, self.indent, self.pretty = what, indent, pretty
        self.depth = self._level = 0
        self._memo: dict[tuple[int, int], tuple[int, Any]] = {}  # keeps each value alive: ids stay unique

    def text(self, value: Any) -> int:
        """At least ``len(str(value))``."""
        if isinstance(value, str):
            return len(value)
        if isinstance(value, Undefined):
            return _OTHER_SIZE
        return self.size(value)

    def size(self, value: Any, pad: int = 0) -> int:
        """At least the length of ``repr(value)`` (or its JSON, its pprint) whose lines start at ``pad``."""
        if isinstance(value, str):
            size = _quoted_size(value)
            if self.pretty and len(value) > 70:  # pprint breaks it into words, one line each at worst
                size += (len(value) + 2) * (pad + 5)
            return size
        if isinstance(value, bool) or value is None:
            return 5
        if isinstance(value, int):
            return value.bit_length() // 3 + 2
        if isinstance(value, float):
            return 24
        contents = _contents(value)
        if contents is None:
            return _OTHER_SIZE
        key = (id(value), pad)
        if key in self._memo:
            return self._memo[key][0]
        self._memo[key] = (_OTHER_SIZE, value)  # a value inside itself: repr shows [...]
        self._level += 1
        self.depth = max(self.depth, self._level)
        try:
            return self._contents_size(value, key, contents, pad)
        finally:
            self._level -= 1

    def _contents_size(self, value: Any, key: tuple[int, int], contents: tuple[bool, Iterable[Any]], pad: int) -> int:
        pairs, items = contents
        lines = self.pretty or self.indent > 0
        inner = pad + (self.indent or 1 if lines else 0)
        per_item = 2 + (inner + 1 if lines else 0)
        size = 24 + pad
        if not pairs and not self.pretty and type(value) in (list, tuple) and set(map(type, value)) <= {str}:
            size += 12 * sum(map(len, value)) + len(value) * (per_item + 2)  # quick, and enough for most
            if size <= MAX_CHARS:
                self._memo[key] = (size, value)
                return size
            size = 24 + pad
        for item in items:
            if pairs:
                name, item = item
                name_size = self.size(name, inner)
                size += name_size + 2 + self.size(item, inner + name_size + 2 if self.pretty else inner) + per_item
            else:
                size += self.size(item, inner) + per_item
            if size > MAX_CHARS:
                raise _refuse(self.what)
        self._memo[key] = (size, value)
        return size


def _check_text(value: Any, what: str) -> None:
    """``str(value)`` would fit."""
    if not isinstance(value, str):
        _check_size(_Sizer(what).text(value), what)


def _value_size(value: Any, conversion: str, sizer: _Sizer) -> int:
    """The text of one formatted value, before its width and precision."""
    if conversion in "ra":
        return sizer.size(value)
    if isinstance(value, (int, float)) and not isinstance(value, str):  # 'd', 'e', 'f', ',' ...
        return _NUMBER_SIZE + 2 * value.bit_length() if isinstance(value, int) else _NUMBER_SIZE
    return sizer.text(value)


def _printf_size(template: str, args: Any) -> int:
    """At least ``len(template % args)``: the text, and for each field its value, width and
    precision (Python's own parsing, for the fields it would accept)."""
    mapping = args if hasattr(args, "__getitem__") and not isinstance(args, (tuple, str)) else None
    positional = list(args) if isinstance(args, tuple) else [args]
    sizer = _Sizer("formatting text")
    size = start = index = 0
    while (percent := template.find("%", start)) >= 0:
        size += percent - start
        position = percent + 1
        value: Any = None
        keyed = position < len(template) and template[position] == "("
        if keyed:
            depth, end = 1, position + 1
            while end < len(template) and depth:
                depth += {"(": 1, ")": -1}.get(template[end], 0)
                end += 1
            if mapping is None or depth:
                break  # Python refuses this format
            value = mapping[template[position + 1:end - 1]]
            position = end
        field = _PRINTF_FIELD.match(template, position)
        if field is None:
            break
        width, precision, kind = field.groups()
        for number in (width, precision):
            if number == "*":
                star = positional[index] if index < len(positional) else 0
                index += 1
                size += abs(star) if isinstance(star, int) else 0
            elif number:
                size += _width(number)
        if kind == "%":
            size += 1
        else:
            if not keyed:
                value = positional[index] if index < len(positional) else None
                index += 1
            size += 1 if kind == "c" else _value_size(value, kind, sizer)
        if size > MAX_CHARS:
            break
        start = field.end()
    else:
        size += len(template) - start
    return size


def _check_printf(template: str, args: Any) -> None:
    factor = 5 if isinstance(template, Markup) else 1  # Markup escapes each value
    _check_size(_printf_size(template, args) * factor, "formatting text")


class _BoundedFormatting:
    """A ``str.format`` that counts its output field by field and refuses the first field that
    would take it past ``MAX_CHARS``, before the field is converted or formatted."""

    escape_factor = 1

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._size = len(format_string)  # the literal text is at most this
        self._sizer = _Sizer("formatting text")
        return super().vformat(format_string, args, kwargs)  # type: ignore[misc]

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion in ("r", "a", "s"):
            _check_size(self._size + _value_size(value, conversion, self._sizer), "formatting text")
        return super().convert_field(value, conversion)  # type: ignore[misc]

    def format_field(self, value: Any, format_spec: str) -> Any:
        if len(format_spec) > 256:  # no real format spec is this long
            raise TemplateTooLarge(f"a format spec of {len(format_spec):,} characters is not formatted")
        numbers = sum(_width(n) for n in _FORMAT_SPEC_NUMBERS.findall(format_spec))
        self._size += (numbers + _value_size(value, "s", self._sizer)) * self.escape_factor
        _check_size(self._size, "formatting text")
        return super().format_field(value, format_spec)  # type: ignore[misc]


class _BoundedFormatter(_BoundedFormatting, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_BoundedFormatting, SandboxedEscapeFormatter):
    escape_factor = 5


def _check_splits(text: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``split``, ``rsplit`` and ``splitlines`` make a list of at most so many items."""
    if method == "splitlines":
        if len(text) > MAX_ITEMS:
            _check_items(sum(text.count(c) for c in _LINE_BREAKS) + 1, "splitting text into lines")
        return
    separator = kwargs.get("sep", args[0] if args else None)
    limit = kwargs.get("maxsplit", args[1] if len(args) > 1 else -1)
    if isinstance(separator, str) and separator:
        count = text.count(separator) + 1
    elif (len(text) + 1) // 2 + 1 <= MAX_ITEMS:
        return
    else:
        count = sum(text.count(c) for c in _WHITESPACE) + 1
    if isinstance(limit, int) and limit >= 0:
        count = min(count, limit + 1)
    _check_items(count, "splitting text")


def _joined_size(items: list[Any], separator: str) -> int:
    sizer = _Sizer("joining values")
    return sum(sizer.text(item) for item in items) + len(separator) * max(len(items) - 1, 0)


def _check_replace(text: str, old: Any, new: Any) -> None:
    if isinstance(old, str) and isinstance(new, str):
        _check_size(len(text) + text.count(old) * (len(new) - len(old)), "replacing text")


def _check_case(text: str, what: str) -> None:
    if not text.isascii():  # 'ß'.upper() is 'SS'; no character maps to more than 3
        _check_size(3 * len(text), what)


def _check_string_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Check a call of a ``str`` method; returns the arguments to call it with (an iterable to
    join is read once, here). ``format`` and ``format_map`` count as they go (``_BoundedFormatting``)."""
    text, name = method.__self__, method.__name__
    if not isinstance(text, str):
        return args
    if name == "expandtabs" and args and isinstance(args[0], int):
        _check_size(len(text) * args[0], "expanding tabs")
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, args[0], args[1])
    elif name == "join" and args:
        items = _bounded_list(list)(args[0])
        _check_size(_joined_size(items, text), "joining values")
        args = (items, *args[1:])
    elif name in _PADDING_METHODS and args and isinstance(args[0], int):
        _check_size(args[0], f"padding text with {name}")
    elif name in ("split", "rsplit", "splitlines"):
        _check_splits(text, name, args, kwargs)
    elif name in _CASE_METHODS:
        _check_case(text, f"changing case with {name}")
    return args


def _check_filter(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _check_ints(args)
    _check_ints(kwargs.values())
    values = [a for a in args if not isinstance(a, (Context, Environment, EvalContext))]
    subject = values[0] if values else None
    if name in _STRINGIFYING_FILTERS and not isinstance(subject, str):
        _check_text(subject, f"the text of a value for |{name}")
    text = subject if isinstance(subject, str) else ""
    if name == "format" and isinstance(subject, str):
        _check_printf(subject, kwargs or tuple(values[1:]))
    elif name == "replace" and len(values) >= 3 and isinstance(subject, str):
        _check_replace(subject, values[1], values[2])
    elif name == "wordwrap" and isinstance(subject, str):
        wrap = kwargs.get("wrapstring", values[4] if len(values) > 4 else "\n")
        _check_size(len(subject) * max(len(str(wrap)), 1), "wrapping text")
    elif name == "tojson":
        indent = kwargs.get("indent", values[2] if len(values) > 2 else None)
        if isinstance(indent, int) and indent > _MAX_JSON_INDENT:
            raise TemplateTooLarge(f"an indent of {indent:,} would repeat on every line")
        sizer = _Sizer("the JSON of a value", indent=indent if isinstance(indent, int) else 0)
        _check_size(sizer.size(subject), "the JSON of a value")
    elif name == "pprint":
        sizer = _Sizer("pretty-printing a value", pretty=True)
        _check_size(sizer.size(subject) * (sizer.depth + 2) * _PRETTY_BYTES, "pretty-printing a value")
    elif name == "list" and isinstance(subject, (str, *_SEQUENCES)):
        _check_items(len(subject), "a list")
    elif name in ("upper", "lower", "title", "capitalize"):
        _check_case(text, f"changing case with |{name}")
    elif name in ("escape", "e", "forceescape"):
        _check_size(len(text) + 4 * sum(text.count(c) for c in _HTML_SPECIAL), "escaping text")
    elif name == "urlencode" and isinstance(subject, str):
        _check_size(len(text) * (3 if text.isascii() else 12), "encoding text")


def _bounded_list(function: Callable[..., Any]) -> Callable[..., Any]:
    """``|list`` of an iterator takes at most ``MAX_ITEMS`` items, and items whose text fits together."""
    @functools.wraps(function)
    def to_list(value: Any) -> Any:
        if isinstance(value, (str, *_SEQUENCES)):
            _check_items(len(value), "a list")
            return function(value)
        items, size, sizer = [], 0, _Sizer("a list")
        for item in islice(value, MAX_ITEMS + 1):
            size += sizer.text(item)
            _check_size(size, "a list")
            items.append(item)
        _check_items(len(items), "a list")
        return items

    return to_list


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
        items = _bounded_list(list)(value)
        if attribute is None:
            _check_size(_joined_size(items, d), "joining values")
        return _checked(function(eval_ctx, items, d, attribute))

    return join


def _bounded_indent(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> Any:
        _check_ints((width,))
        _check_text(s, "indenting text")
        prefix = len(width) if isinstance(width, str) else width
        _check_size(len(str(s)) + (str(s).count("\n") + 1) * prefix, "indenting text")
        return _checked(function(s, width, first, blank))

    return indent


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}`` goes through here before ``str``."""
    if not isinstance(value, str):
        _check_text(value, "the text of a value")
    return value


class _BoundedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """``a ~ b`` joins through ``environment.concat``, which checks the size first."""
        self.write("environment.concat((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """``ImmutableSandboxedEnvironment`` where no value, block or output grows past ``MAX_CHARS``."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, **options: Any) -> None:
        options.setdefault("finalize", _finalize)
        super().__init__(**options)
        self.filters = {name: bounded_filter(name, function) for name, function in self.filters.items()}
        self.filters["join"] = _bounded_join(self.filters["join"])
        self.filters["indent"] = _bounded_indent(self.filters["indent"])
        self.filters["list"] = bounded_filter("list", _bounded_list(list))

    def concat(self, parts: Iterable[Any]) -> str:  # type: ignore[override]  # jinja2's is "".join
        """A template's output (and a block's, a macro's) as it streams, stopped at the first
        piece that takes it past the limit, not after it is built."""
        sizer = _Sizer("the text")
        pieces: list[str] = []
        size = 0
        for piece in parts:
            size += sizer.text(piece)
            _check_size(size, "the text")
            pieces.append(piece if isinstance(piece, str) else str(piece))
        return "".join(pieces)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        both_ints = isinstance(left, int) and isinstance(right, int)
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and not isinstance(times, bool):
                    _check_length(seq, len(seq) * times, "repeating a value")
                    if not isinstance(seq, str) and seq and times > 1:
                        _check_size(_Sizer("repeating a value").size(seq) * times, "repeating a value")
            if both_ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise _refuse("a product of huge numbers")
        elif operator == "**":
            if both_ints and right > 0 and left.bit_length() * right > MAX_INT_BITS:
                raise _refuse(f"a power of {right:,}")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _check_length(left, len(left) + len(right), "adding two values")
                factor = 5 if isinstance(left, Markup) and not isinstance(right, Markup) else 1  # escapes right
                if isinstance(left, str) and isinstance(right, str):
                    _check_size(len(left) + len(right) * factor, "adding two values")
                elif not isinstance(left, str) and not isinstance(right, str):
                    sizer = _Sizer("adding two values")
                    _check_size(sizer.size(left) + sizer.size(right), "adding two values")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, right)
        return _checked(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """jinja2's sandboxed ``str.format`` and ``format_map``, with a formatter that counts."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        text: str = value.__self__
        formatter: Formatter = (
            _BoundedEscapeFormatter(self, escape=text.escape) if isinstance(text, Markup) else _BoundedFormatter(self)
        )

        @functools.wraps(wrapper)
        def bounded(*args: Any, **kwargs: Any) -> str:
            if value.__name__ == "format_map":
                if kwargs or len(args) != 1:
                    return wrapper(*args, **kwargs)  # jinja2 raises the TypeError
                args, kwargs = (), args[0]
            return type(text)(formatter.vformat(text, args, kwargs))

        return bounded

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_ints(args)
        _check_ints(kwargs.values())
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        if isinstance(getattr(method, "__self__", None), str):
            args = _check_string_method(method, args, kwargs)
        return _checked(super().call(__context, __obj, *args, **kwargs))
