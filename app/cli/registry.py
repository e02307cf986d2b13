"""``enclave models ...`` and ``enclave auth ...``: bringing models in and proving them."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from app.cli.common import SIZE, cli, user_errors
from app.hub.repos import Choice
from app.models import Model
from app.remote_models import RemoteModel
from app.services import Services
from inference.devices import format_size, simulated_machine
from inference.errors import EnclaveError


@cli.group()
def models() -> None:
    """Your models: import, discover, download, verify, carry to another machine."""


def _progress(label: str):
    def show(done: int, total: int) -> None:
        if sys.stderr.isatty() and total:
            click.echo(f"\r\033[K{label}: {format_size(done)} of {format_size(total)} ({done * 100 // total}%)",
                       err=True, nl=False)
    return show


def _done_line() -> None:
    if sys.stderr.isatty():
        click.echo("\r\033[K", err=True, nl=False)


def _describe(m: Model) -> str:
    experts = f"{m.experts} experts ({m.experts_used} used)" if m.experts else "dense"
    params = f"{(m.parameters or 0) / 1e9:.1f}B" if (m.parameters or 0) >= 1e8 else f"{(m.parameters or 0) / 1e6:.1f}M"
    verified = m.verified_at[:10] if m.verified_at else "never"
    line = (f"{m.id:<32} {m.name:<28} {m.architecture or '?':<10} {params:>7} {experts:<22} {m.quantization or '?':<7} "
            f"ctx {m.context_length or 0:>7,}  {format_size(m.size):>9}  {m.origin:<10} verified {verified}")
    return line + (f"\n{'':<33}{m.projector.describe()}" if m.projector is not None else "")


_CONTEXT_SAID = {"server": "as the server says", "given": "as given", "default": "a default"}


def describe_remote(m: RemoteModel) -> str:
    """A remote model's line in 'enclave models list'."""
    key = f"key ${m.key_env}" if m.key_env else "no key"
    return (f"{m.name:<32} remote: {m.model_id} on {m.where}  ctx {m.context_length:>7,} "
            f"({_CONTEXT_SAID.get(m.context_source, m.context_source)})  {key}")


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def list_command(as_json: bool) -> None:
    """Registered models and what they are; remote ones with where they run."""
    with Services.open(readonly=True) as services:
        registered = services.models.all()
        remote = services.remote_models.all()
    if as_json:
        click.echo(json.dumps([asdict(m) for m in registered]
                              + [{**asdict(m), "remote": True, "where": m.where} for m in remote], indent=2))
        return
    if not registered and not remote:
        click.echo("No models yet. 'enclave models import PATH', 'enclave models discover --add' or "
                   "'enclave models pull REPO' brings one in; 'enclave models add-remote NAME URL' uses one "
                   "served elsewhere.")
    for m in registered:
        click.echo(_describe(m))
    for r in remote:
        click.echo(describe_remote(r))


@models.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--copy", "mode", flag_value="copy", default=True, help="Copy into Enclave's folder (default).")
@click.option("--link", "mode", flag_value="link", help="Link from Enclave's folder to the file where it is.")
@click.option("--in-place", "mode", flag_value="in_place", help="Use the file where it is.")
@click.option("--mmproj", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The model's vision projector (mmproj-*.gguf): the model then reads images.")
@user_errors
def import_command(path: Path, mode: str, mmproj: Path | None) -> None:
    """Import a .gguf file (with its shards), a folder of them, or an exported folder
    with a manifest; every file is validated and hashed first. A vision model's projector
    comes with --mmproj, or as an mmproj*.gguf in the folder imported."""
    with Services.open() as services:
        report = services.import_model(path, mode, mmproj=mmproj,  # type: ignore[arg-type]
                                       on_progress=_progress("Importing"))
    _done_line()
    for model in report.imported:
        images = f"; {model.projector.describe()}" if model.projector is not None else ""
        click.echo(f"Imported {model.id}: {model.name} ({format_size(model.size)}, {model.origin}{images}).")
    for name, why in report.refused:
        click.echo(f"Refused {name}: {why}", err=True)
    if report.refused and not report.imported:
        raise SystemExit(2)


@models.command()
@click.argument("model", required=False)
@user_errors
def verify(model: str | None) -> None:
    """Hash every file again (of MODEL, or of all) and compare with the registry."""
    with Services.open() as services:
        targets = [services.models.get(model)] if model else services.models.all()
        results = [services.models.verify(m, _progress(f"Verifying {m.id}")) for m in targets]
    _done_line()
    for result in results:
        if result.ok:
            click.echo(f"{result.model.id}: ok ({len(result.model.all_files)} files, "
                       f"{format_size(sum(f.size for f in result.model.all_files))})")
        else:
            click.echo(f"{result.model.id}: FAILED", err=True)
            for problem in result.problems:
                click.echo(f"  {problem}", err=True)
    if any(not r.ok for r in results):
        raise SystemExit(2)


@models.command()
@click.argument("model")
@click.option("--delete-files", is_flag=True, help="Also delete its files in Enclave's own model folder.")
@click.option("--delete-external", is_flag=True, help="With --delete-files: delete files outside it too.")
@user_errors
def remove(model: str, delete_files: bool, delete_external: bool) -> None:
    """Forget MODEL (a remote one too). Files outside Enclave's folder are never deleted unless you say so."""
    with Services.open() as services:
        if services.remote_model(model) is not None:
            removed = services.remove_remote_model(model)
            click.echo(f"Removed remote model {removed.name} ({removed.model_id} on {removed.where}).")
            return
        removal = services.remove_model(model, delete_files=delete_files, delete_external=delete_external)
    click.echo(f"Removed {removal.model.id} from the registry.")
    for path in removal.kept:
        click.echo(f"  kept on disk: {path}")
    if removal.was_default:
        click.echo("It was the default model: no default is set now ('enclave settings set default_model MODEL').")


@models.command("attach-projector")
@click.argument("model")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--copy", "mode", flag_value="copy", default=True, help="Copy into Enclave's folder (default).")
@click.option("--link", "mode", flag_value="link", help="Link from Enclave's folder to the file where it is.")
@click.option("--in-place", "mode", flag_value="in_place", help="Use the file where it is.")
@user_errors
def attach_projector(model: str, file: Path, mode: str) -> None:
    """Give MODEL its vision projector FILE (mmproj-*.gguf), so it reads images. The
    projector must be the one published with MODEL: one of another model is refused."""
    with Services.open() as services:
        target = services.models.get(model)
        updated = services.models.attach_projector(target, file, mode,  # type: ignore[arg-type]
                                                   on_progress=_progress("Hashing"))
    _done_line()
    assert updated.projector is not None
    click.echo(f"{updated.id} {updated.projector.describe()}: {updated.projector.path}")


@models.command("detach-projector")
@click.argument("model")
@user_errors
def detach_projector(model: str) -> None:
    """Take MODEL's vision projector away (its copy in Enclave's folder is deleted; a file
    elsewhere stays where it is). MODEL then reads text only."""
    with Services.open() as services:
        target = services.models.get(model)
        kept = services.models.detach_projector(target)
    click.echo(f"{target.id} reads text only now." + (f" Kept on disk: {kept}" if kept else ""))


@models.command()
@click.argument("model")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@user_errors
def export(model: str, folder: Path) -> None:
    """Copy MODEL and a manifest (names, sizes, SHA-256, source, licence) to FOLDER, for a
    machine without network; 'enclave models import FOLDER' there checks every byte."""
    with Services.open(readonly=True) as services:
        target = services.models.get(model)
        manifest = services.export_model(target.id, folder, on_progress=_progress("Exporting"))
    _done_line()
    click.echo(f"Exported {target.id} to {folder} (manifest {manifest.name}).")


@models.command()
@click.option("--add", is_flag=True, help="Register what is found, in place (no copy).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def discover(add: bool, as_json: bool) -> None:
    """Find models other apps downloaded (Hugging Face cache, LM Studio, Ollama, GPT4All,
    Jan, llama.cpp); with --add, use them where they are."""
    from app.discovery import discover as find

    found = find()
    if as_json and not add:
        click.echo(json.dumps([{**asdict(f), "files": [str(p) for p in f.files],
                                "projector": str(f.projector) if f.projector else None} for f in found], indent=2))
        return
    if not found:
        click.echo("No models from other apps found.")
    with Services.open(readonly=not add) as services:
        for item in found:
            known = services.models.registered_found(item)
            state = f"registered as {known.id}" if known else ("" if add else "not registered")
            if add and not known:
                try:
                    model = services.models.register_found(item, on_progress=_progress(f"Hashing {item.name}"))
                    state = f"added as {model.id}"
                except EnclaveError as exc:
                    state = f"not added: {exc}"
                _done_line()
            images = "  reads images" if item.projector is not None else ""
            click.echo(f"{item.app:<20} {item.name:<50} {format_size(item.size):>9}  {item.files[0]}  {state}{images}")


@models.command()
@click.option("--vram", type=SIZE, default=None, help="Judge for a GPU with this much memory.")
@click.option("--ram", type=SIZE, default=None, help="Judge for this much free RAM.")
@click.option("--ctx", "n_ctx", type=click.IntRange(min=512), default=8192, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def catalog(vram: int | None, ram: int | None, n_ctx: int, as_json: bool) -> None:
    """Good quantized MoE models, and which fit this machine (or --vram/--ram) at what context."""
    from app.catalog import fits, load_catalog

    with Services.open(readonly=True) as services:
        here = services.machine()
    machine = here if vram is None and ram is None else simulated_machine(vram, ram or here.ram_free_bytes)
    results = fits(load_catalog(), machine, n_ctx)
    if as_json:
        click.echo(json.dumps([{"name": f.entry.name, "repo": f.entry.repo, "quant": f.entry.quant,
                                "size_bytes": f.entry.size_bytes, "size_known": f.entry.size_known,
                                "fits": f.default.fits, "largest_context": f.largest.n_ctx if f.largest.fits else 0,
                                "verdict": f.default.verdict} for f in results], indent=2))
        return
    click.echo(f"For {machine.describe()}, at a context of {n_ctx:,}:")
    for f in results:
        size = format_size(f.entry.size_bytes) if f.entry.size_known else f"~{format_size(f.entry.size_bytes)}"
        verdict = (f"fits (up to {f.largest.n_ctx:,} tokens of context)" if f.default.fits
                   else "does not fit")
        click.echo(f"  {f.entry.name:<24} {f.entry.quant:<7} {size:>10}  {verdict}")
        click.echo(f"      {f.entry.about}  enclave models pull {f.entry.repo} --quant {f.entry.quant}")


@models.command()
@click.argument("query")
@click.option("--limit", type=click.IntRange(min=1, max=100), default=20, show_default=True)
@user_errors
def search(query: str, limit: int) -> None:
    """Search the Hugging Face hub for GGUF repositories (goes online)."""
    from app import hub

    with Services.open(readonly=True) as services:
        offline = services.current_settings().offline
    hub.refuse_if_offline(offline, "search")  # before the keyring is asked for a token
    for repo in hub.search(query, limit=limit, token=hub.get_token(quiet=True), offline=offline):
        click.echo(f"{repo['id']:<60} {repo.get('downloads', 0):>10,} downloads")


@models.command()
@click.argument("repo")
@click.option("--file", "file_name", default=None, help="The exact file (or first shard) to download.")
@click.option("--quant", default=None, help="The quantization to pick, e.g. Q4_K_M.")
@click.option("--revision", default=None, help="A branch, tag or commit (default: main).")
@user_errors
def pull(repo: str, file_name: str | None, quant: str | None, revision: str | None) -> None:
    """Download a GGUF model from the Hugging Face hub (goes online), verify it, register it."""

    def announce(choice: Choice) -> None:
        names = ", ".join(f.name for f in choice.files)
        click.echo(f"Downloading {names} ({format_size(sum(f.size for f in choice.files))}) from {repo}.", err=True)

    with Services.open() as services:
        model = services.pull_model(repo, file=file_name, quant=quant, revision=revision, on_choice=announce,
                                    on_progress=_progress("Downloading"), on_checking=_progress("Checking"))
    _done_line()
    click.echo(f"Downloaded and verified {model.id}: {model.name} ({format_size(model.size)}).")


@cli.group()
def auth() -> None:
    """Your Hugging Face token, for gated models: kept in the system keyring, never in a file."""


@auth.command()
@click.option("--token", default=None, help="The token (default: asked for, not echoed).")
@user_errors
def login(token: str | None) -> None:
    """Save a Hugging Face access token in the system keyring."""
    from app import hub

    value = token or click.prompt("Hugging Face token (huggingface.co/settings/tokens)", hide_input=True)
    hub.save_token(value.strip())
    click.echo("Token saved in the system keyring.")


@auth.command()
@user_errors
def logout() -> None:
    """Delete the saved token."""
    from app import hub

    hub.delete_token()
    click.echo("Token deleted.")
