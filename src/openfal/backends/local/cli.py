"""``openfal models list`` and ``openfal models download NAME``.

Registered by the main CLI. Cheap to import: huggingface_hub loads only for a download.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from openfal.backends.local import install, registry
from openfal.config import Settings


def _settings(ctx: click.Context) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in (ctx.obj or {}).items() if v is not None}
    return Settings(**overrides)


@click.group("models")
def models() -> None:
    """Local model weights: what is installed, and downloading what is missing."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.pass_context
def list_models(ctx: click.Context, as_json: bool) -> None:
    """Every model the local backend can use, where it is, and which endpoints need it."""
    rows = install.list_models(_settings(ctx))
    if as_json:
        click.echo(json.dumps([asdict(row) for row in rows]))
        return
    click.echo("name\tinstalled\tsize\trepo\tpath\tendpoints")
    for row in rows:
        size = f"{row.size_bytes / 1e9:.1f} GB" if row.size_bytes is not None else "-"
        click.echo(
            "\t".join(
                [row.name, "yes" if row.installed else "no", size, row.repo_id, row.path, ", ".join(row.endpoints) or "(optional)"]
            )
        )


@models.command("download")
@click.argument("name", type=click.Choice(list(registry.MODELS)))
@click.option("--token", default=None, help="Hugging Face token for gated repositories (default: HF_TOKEN or `hf auth login`).")
@click.pass_context
def download(ctx: click.Context, name: str, token: str | None) -> None:
    """Download NAME from the Hugging Face Hub into the models folder."""
    settings = _settings(ctx)
    info = registry.MODELS[name]
    click.echo(f"downloading {info.repo_id} into {settings.effective_models_dir / name}")
    try:
        folder = install.download_model(name, settings, token=token)
    except install.DownloadFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"installed {name} at {folder} ({install.folder_size(folder) / 1e9:.1f} GB)")
