"""Command-line image sizes shared by the FLUX benchmarks."""

from __future__ import annotations


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"1024x768,1024x1024"`` -> [(1024, 768), (1024, 1024)]."""
    sizes = []
    for item in text.split(","):
        width, height = item.lower().split("x")
        sizes.append((int(width), int(height)))
    return sizes
