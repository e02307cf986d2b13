"""Chat templates written to attack: reaching for Python internals, never ending, or building
huge strings. Each is refused or stopped within the limits, with a message that reaches the
user (the worker's ``Failed(kind="template")``, the CLI's one line), and the app goes on."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from inference import chat_template, template_sandbox
from inference.errors import ChatTemplateError
from inference.protocol import ChatMessage, Failed, Generate, Sampling, Token
from inference.worker import Worker, WorkerState
from tests.cli import one_error_line
from tests.conftest import settings_for
from tests.test_cli import enclave
from tests.tiny_models import MOE, write_tiny_model

HI = [ChatMessage("user", "hi")]
ECHO = "{% for m in messages %}{{ m.content }}{% endfor %}"

INTERNALS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__()[0].__init__.__globals__['sys'] }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__['__builtins__']['__import__']('os').system('id') }}",
    "{{ namespace.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ raise_exception.__globals__['__builtins__'] }}",
    "{{ strftime_now.__globals__.datetime }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os }}",
    "{{ self.__dict__ }}",
    "{{ '{0.__class__.__init__.__globals__}'.format(raise_exception) }}",
    "{{ '{0.__class__}'.format(messages) }}",
    "{{ '%s'|format(messages.__class__.__mro__) }}",
    "{{ (messages|attr('__class__')).__mro__ }}",
    "{{ range.__self__.__import__('os') }}",
    "{% import 'os' as os %}{{ os.system('id') }}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{% set x = messages.append({'role': 'system', 'content': 'obey'}) %}{{ x }}",
    "{% set x = {}.update(a=1) %}",
    "{{ {}.__setitem__('a', 1) }}",
]

# Every one of these once made the worker allocate from 0.5 GB to several GB in one step.
HUGE = [
    "{{ 'x' * 1000000000 }}",
    "{{ 'x' * 300000000 }}",
    "{{ [1] * 1000000000 }}",
    "{{ (range(100000)|list) * 100000 }}",
    "{{ 10 ** 100000000 }}",
    "{{ 'x'|center(1000000000) }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ 'x'.zfill(1000000000) }}",
    "{{ '%01000000000d' % 1 }}",
    "{{ '%0*d' % (1000000000, 1) }}",
    "{{ '%01000000000d'|format(1) }}",
    "{{ '{:>1000000000}'.format(1) }}",
    "{{ '{:>{w}}'.format(1, w=1000000000) }}",
    "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}",
    "{% set s = 'x' * 1000000 %}{% set t %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endset %}",
    "{% set s = 'x' * 1000000 %}{% macro m() %}{% for i in range(100000) %}{{ s }}{% endfor %}{% endmacro %}{{ m() }}",
    "{% set s = 'x' * 1000000 %}{{ ([s] * 1000)|join }}",
    "{% set s = 'x' * 1000000 %}{{ ''.join([s] * 1000) }}",
    "{% set s = 'x\n' * 1000000 %}{{ s|indent(1000) }}",
    "{{ ('x' * 1000000)|replace('x', 'y' * 100) }}",
    "{{ ('x' * 1000000).replace('', 'y' * 100) }}",
    "{{ ('\t' * 1000000).expandtabs(1000) }}",
    "{{ ('x' * 1000)|wordwrap(5, wrapstring='y' * 10000000) }}",
    "{{ []|batch(1000000000, 'x')|list }}",
    "{{ ('x' * 60000000)|list|length }}",
    "{{ {'a': 1}|tojson(indent=1000000000) }}",
    "{{ {'a': [[[[1]]]]}|tojson(indent=10000000) }}",
]

# Each field, item or piece of these is within the limits; together they once built 90 MB to 60 GB
# before the size was checked (many fields or items are formatted or joined in a single C call).
S = "{% set s = 'x' * 30000000 %}"
HUGE_TOGETHER = [
    "{{ ('%30000000d' * 5) % (1, 2, 3, 4, 5) }}",
    "{{ ('%(a)30000000d' * 200) % {'a': 1} }}",
    "{{ ('%.30000000d' * 3) % (1, 2, 3) }}",
    "{{ ('%30000000d' * 5)|format(1, 2, 3, 4, 5) }}",
    S + "{{ '%s%s%s%s%s' % (s, s, s, s, s) }}",
    S + "{{ '%r' % ([s, s, s],) }}",
    "{{ ('{:>30000000}' * 3).format(1, 2, 3) }}",
    "{{ ('{0:>30000000}' * 200).format(1) }}",
    "{{ ('{a:.30000000f}' * 3).format_map({'a': 1.5}) }}",
    S + "{{ '{0}{0}{0}{0}{0}'.format(s) }}",
    S + "{{ '{!r}'.format([s, s, s]) }}",
    "{% set l = [('x' * 30000000)] * 3 %}{{ l }}",
    "{% set l = [('x' * 30000000)] * 3 %}{{ l|string }}",
    "{% set l = [('x' * 30000000)] * 3 %}{{ l|tojson }}",
    "{% set l = [('x' * 30000000)] * 1000 %}{{ l|length }}",
    "{% set l = [('x' * 30000000)] + [('y' * 30000000)] + [('z' * 30000000)] %}{{ l|length }}",
    S + "{{ [s, s, s] }}",
    S + "{{ [s, s, s]|string }}",
    S + "{{ [s, s, s]|tojson }}",
    S + "{{ [s, s, s]|pprint }}",
    S + "{{ [[s, s, s]]|join }}",
    S + "{{ ''.join([[s, s, s]]) }}",
    S + "{{ [s, s, s] ~ '' }}",
    S + "{{ {'a': s, 'b': s, 'c': s} }}",
    S + "{% set l = [s, s] %}{% set l = [l, l] %}{% set l = [l, l] %}{{ l }}",
    "{{ (' xy' * 20000000).split() }}",
    "{{ (' xy' * 20000000).split()|length }}",
    "{{ (' xy' * 20000000).rsplit(' ')|length }}",
    "{{ ('x\n' * 30000000).splitlines()|length }}",
]

ENDLESS = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{{ lipsum(100) }}{% endfor %}",
]


def render(template: str) -> str:
    return chat_template.ChatTemplate(template, "<s>", "</s>").render(HI)


@pytest.mark.parametrize("template", INTERNALS)
def test_python_internals_are_out_of_reach(template: str) -> None:
    try:
        out = render(template)
    except ChatTemplateError as error:
        assert "Traceback" not in str(error)
    else:  # the sandbox answered with an undefined value: nothing of Python's leaked
        assert not any(leak in out for leak in ("<class", "<function", "<module", "<built-in", "uid=", "root:"))


@pytest.mark.parametrize("template", HUGE + HUGE_TOGETHER)
def test_huge_values_are_refused_before_they_are_built(template: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ChatTemplateError, match="far larger than any prompt"):
            render(template)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < template_sandbox.MAX_CHARS * 2  # the limit, not the gigabytes the template asked for


@pytest.mark.parametrize("template", ENDLESS)
def test_endless_templates_are_stopped(monkeypatch: pytest.MonkeyPatch, template: str) -> None:
    monkeypatch.setattr(chat_template, "RENDER_SECONDS", 0.3)
    with pytest.raises(ChatTemplateError, match=r"did not finish within 0\.3 s"):
        render(template)


def test_endless_recursion_is_a_template_error() -> None:
    with pytest.raises(ChatTemplateError, match="RecursionError"):
        render("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}")


def test_real_templates_still_render_everything_they_use() -> None:
    template = (
        "{% set ns = namespace(sys='') %}{% for m in messages %}{% if loop.first %}{% set ns.sys = m.role ~ '|' %}"
        "{% endif %}{{ '<|' + m.role + '|>' ~ m.content|trim|replace('h', 'H') ~ ('%2d' % loop.index) }}"
        "{{ ({'n': loop.length}|tojson) }}{{ '{}{}'.format('a', 'b') }}{{ ['x', 'y']|join(',') }}"
        "{{ 'a\nb'|indent(2) }}{{ ('-' * 3).center(7) }}{% endfor %}{{ ns.sys }}"
        "{% if add_generation_prompt %}{{ bos_token + eos_token }}{% endif %}"
    )
    assert render(template) == '<|user|>Hi 1{"n": 1}abx,ya\n  b  ---  user|<s></s>'


def hostile_model(tmp_path: Path, template: str) -> Path:
    return write_tiny_model(tmp_path / "hostile.gguf", replace(MOE, name="hostile", chat_template=template))


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ 'x' * 1000000000 }}" + ECHO, "far larger than any prompt"),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}" + ECHO, "tried something unsafe"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "RecursionError"),
])
def test_the_worker_reports_a_hostile_template_and_lives_on(worker: Worker, tmp_path: Path, template: str,
                                                            expected: str) -> None:
    worker.load(settings_for(hostile_model(tmp_path, template)))
    events = list(worker.generate(Generate(messages=tuple(HI), sampling=Sampling(temperature=0, max_tokens=4))))
    assert isinstance(events[-1], Failed) and events[-1].kind == "template"
    assert expected in events[-1].message
    assert worker.state is WorkerState.LOADED
    raw = list(worker.generate(Generate(prompt="hello", sampling=Sampling(temperature=0, max_tokens=4))))
    assert len([e for e in raw if isinstance(e, Token)]) == 4  # the same process goes on answering


def test_the_cli_says_so_in_one_line(tmp_path: Path, enclave_home: Path) -> None:
    path = hostile_model(tmp_path, "{{ '%01000000000d' % 1 }}" + ECHO)
    result = enclave("run", str(path), "hello", "--max-tokens", "4", home=enclave_home)
    assert "far larger than any prompt" in one_error_line(result)
    ok = enclave("run", str(path), "hello", "--max-tokens", "4", "--raw", home=enclave_home)
    assert ok.returncode == 0, ok.stderr
