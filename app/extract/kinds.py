"""Which files Enclave can read, decided by extension, plus a cheap look at the first bytes
where an extension is missing or ambiguous."""

from __future__ import annotations

from pathlib import Path

_TEXT = (".txt", ".text", ".log", ".rst", ".adoc", ".asciidoc", ".org", ".nfo")
_MARKDOWN = (".md", ".markdown", ".mdown", ".mkd", ".mkdn", ".mdx")
_CODE = (
    # general-purpose languages
    ".py", ".pyi", ".pyw", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".java", ".c", ".h", ".cpp", ".hpp",
    ".cc", ".hh", ".cxx", ".hxx", ".c++", ".ino", ".cs", ".fs", ".fsx", ".vb", ".go", ".rs", ".rb", ".php",
    ".swift", ".kt", ".kts", ".scala", ".sc", ".groovy", ".gradle", ".dart", ".m", ".mm", ".lua", ".pl", ".pm",
    ".r", ".jl", ".hs", ".ml", ".mli", ".ex", ".exs", ".erl", ".hrl", ".clj", ".cljs", ".edn", ".lisp", ".el",
    ".scm", ".rkt", ".nim", ".zig", ".v", ".sv", ".vhd", ".vhdl", ".asm", ".s", ".f", ".f90", ".f95", ".pas",
    ".ada", ".d", ".cr", ".coffee", ".elm", ".purs", ".sol", ".proto", ".thrift", ".graphql", ".gql", ".cu",
    ".cuh", ".glsl", ".hlsl", ".wgsl", ".vue", ".svelte", ".astro",
    # shells and scripts
    ".sh", ".bash", ".zsh", ".fish", ".ksh", ".ps1", ".psm1", ".bat", ".cmd", ".awk", ".sed", ".tcl", ".vim",
    # data, config and markup kept as written
    ".sql", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".properties", ".env", ".xml", ".xsd", ".xsl",
    ".plist", ".jsonl", ".ndjson", ".jsonc", ".json5", ".css", ".scss", ".sass", ".less", ".tex", ".bib",
    ".sty", ".cls", ".cmake", ".mk", ".dockerfile", ".tf", ".hcl", ".nix", ".bzl", ".diff", ".patch",
    ".gitignore", ".gitattributes", ".editorconfig", ".srt", ".vtt",
)
_BY_EXTENSION: dict[str, str] = {
    **dict.fromkeys(_TEXT, "text"),
    **dict.fromkeys(_MARKDOWN, "markdown"),
    **dict.fromkeys(_CODE, "code"),
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx", ".xlsm": "xlsx",
    ".csv": "csv",
    ".tsv": "tsv", ".tab": "tsv",
    ".json": "json", ".geojson": "json",
    ".eml": "email",
}
# Images: their text is read by a library's vision model (app/images.py, app/extract/image.py).
IMAGE_FILE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".webp",
                                                   ".gif", ".bmp", ".dib"})
# Files known by their whole name rather than an extension.
_BY_NAME: dict[str, str] = {
    **dict.fromkeys(("readme", "license", "licence", "copying", "authors", "changelog", "changes", "news",
                     "todo", "notice", "install", "contributing"), "text"),
    **dict.fromkeys(("makefile", "gnumakefile", "dockerfile", "containerfile", "vagrantfile", "gemfile",
                     "rakefile", "procfile", "justfile", "cmakelists.txt", "jenkinsfile", "brewfile"), "code"),
}

# Documents with text of their own (image files, read only through a vision model, are apart).
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_BY_EXTENSION)

SNIFF_BYTES = 8192
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\b\x1b")
_UNICODE_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")  # also covers UTF-32 LE/BE


def is_probably_binary(sample: bytes) -> bool:
    """True when ``sample`` (the start of a file, ideally ~8 KB) does not look like text.

    A NUL byte means binary unless a UTF-16/32 byte order mark explains it; otherwise more than
    5% control characters (other than tabs, newlines and the like) means binary. Bytes >= 0x80
    are not counted: they are normal in UTF-8 and the legacy 8-bit encodings.
    """
    sample = sample[:SNIFF_BYTES]
    if not sample or sample.startswith(_UNICODE_BOMS):
        return False
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if (b < 32 and b not in _TEXT_CONTROLS) or b == 127)
    return controls / len(sample) > 0.05


def _head(path: Path, n: int = SNIFF_BYTES) -> bytes | None:
    try:
        if not path.is_file():  # never open a FIFO or a device: reading it could block forever
            return None
        with path.open("rb") as f:
            return f.read(n)
    except OSError:
        return None


def _is_mpeg_ts(head: bytes) -> bool:
    """MPEG transport streams (videos) share .ts with TypeScript: 188-byte packets starting 0x47."""
    return len(head) > 376 and head[0] == head[188] == head[376] == 0x47


def kind_of(path: Path) -> str | None:
    """The kind of document ``path`` holds, or None when Enclave cannot read that type.

    Mostly by extension. An extension-less file is sniffed and taken as plain text when its start
    looks like text; a ``.ts`` file that is really an MPEG video is refused.
    """
    name = path.name.lower()
    if name in _BY_NAME:
        return _BY_NAME[name]
    suffix = path.suffix.lower()
    if suffix in IMAGE_FILE_EXTENSIONS:
        return "image"
    kind = _BY_EXTENSION.get(suffix) or _BY_EXTENSION.get(name)  # the latter for dotfiles such as .gitignore
    if suffix == ".ts":
        head = _head(path, 400)
        if head is not None and _is_mpeg_ts(head):
            return None
    if kind is None and not suffix and not name.startswith("."):
        head = _head(path)
        if head and not is_probably_binary(head):
            return "text"
    return kind


def describe_supported() -> str:
    return ("text, Markdown, source code, HTML, PDF, Word (.docx), PowerPoint (.pptx), Excel (.xlsx), CSV, TSV, "
            "JSON, e-mail (.eml), and images (PNG, JPEG, TIFF, WebP, GIF, BMP) with a vision model")
