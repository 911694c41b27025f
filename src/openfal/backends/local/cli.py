"""``openfal models list``, ``openfal models download NAME`` and ``openfal models plan``.

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
    click.echo("name\tinstalled\tsize\trepo\tlicence\tpath\tendpoints")
    for row in rows:
        size = f"{row.size_bytes / 1e9:.1f} GB" if row.size_bytes is not None else "-"
        click.echo(
            "\t".join(
                [
                    row.name, "yes" if row.installed else "no", size, row.repo_id,
                    row.licence + ("" if row.commercial else " (non-commercial)"), row.path, ", ".join(row.endpoints) or "(optional)",
                ]  # fmt: skip
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


@models.command("plan")
@click.option("--gpu-memory", type=float, default=None, help="GiB of the card to plan for (default: this machine's first GPU).")
@click.option("--no-fp8", is_flag=True, help="Plan for a card without float8 (compute capability < 8.9, or no torchao).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.pass_context
def plan(ctx: click.Context, gpu_memory: float | None, no_fp8: bool, as_json: bool) -> None:
    """Where each model's weights would live on a GPU: resident, float8, offloaded.

    Sized from the real model configs (no weights needed), for OPENFAL_MAX_BATCH_IMAGES
    images at the largest of OPENFAL_WARMUP_SIZES."""
    from openfal.backends.local import memory_plan

    settings = _settings(ctx)
    fp8 = not no_fp8
    if gpu_memory is None:
        import torch

        if not torch.cuda.is_available():
            raise click.ClickException("no CUDA GPU here: pass --gpu-memory GiB to plan for a card")
        from openfal.backends.local.acceleration import fp8_unsupported

        device = torch.device("cuda", 0)
        gpu_memory = round(torch.cuda.get_device_properties(device).total_memory / memory_plan.GIB, 1)
        fp8 = fp8 and fp8_unsupported(device) is None
    result = memory_plan.plan_all(
        gpu_memory,
        max_images=settings.max_batch_images,
        sizes=settings.warmup_sizes,
        fp8_supported=fp8,
        prefer_fp8=fp8 and settings.acceleration in ("fp8", "auto"),
        lora_slots=settings.lora_slots if settings.acceleration != "off" else 0,  # compiled engines reserve LoRA slots
        lora_rank=settings.lora_max_rank,
    )
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"GPU {result['gpu_memory_gib']} GiB; {result['max_batch_images']} images at {result['largest_size']}; "
        f"float8 {'available' if fp8 else 'not available'}"
    )
    click.echo("model\tfits\tpeak GiB\ttransformer\toffload\tVAE batch\tweights GiB")
    for row in result["models"]:
        click.echo(
            "\t".join(
                [row["model"], "yes" if row["fits"] else "NO", f"{row['resident_gib']:.1f}", row["transformer_dtype"], row["offload"],
                 str(row["vae_decode_batch"]), f"{row['weights_gib']:.1f}"]
            )  # fmt: skip
        )
