"""Render the triage picture: the radiograph, the activation map as a heat overlay, burned-in text.

Every full-size step runs in Pillow's C code or in place in NumPy (a radiograph is millions of
pixels; each temporary array is tens of megabytes), so the picture costs little beside the
model.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MAX_SIDE = 2048
MAX_OVERLAY_OPACITY = 0.5
# Heat colour map anchors (value, R, G, B): blue -> cyan -> yellow -> red.
HEAT_ANCHORS = np.array([[0.00, 0, 0, 255], [0.35, 0, 255, 255], [0.70, 255, 255, 0],
                         [1.00, 255, 0, 0]], dtype=np.float32)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to RGB floats in [0, 255], shape (..., 3)."""
    return np.stack([np.interp(heat, HEAT_ANCHORS[:, 0], HEAT_ANCHORS[:, channel])
                     for channel in (1, 2, 3)], axis=-1)


HEAT_LUT = np.clip(heat_colours(np.linspace(0.0, 1.0, 256)) + 0.5, 0, 255).astype(np.uint8)
# Overlay opacity per heat level, round(level * MAX_OVERLAY_OPACITY) with halves up.
OPACITY_LUT = (np.arange(256) * MAX_OVERLAY_OPACITY + 0.5).astype(np.uint8)


def render(pixels: np.ndarray, cam: np.ndarray | None, lines: list[str]) -> np.ndarray:
    """An RGB uint8 picture of display-ready `pixels` (float, [0, 1]), at most MAX_SIDE pixels
    on its long side, with the positive part of `cam` stretched over it and `lines` burned in."""
    grey = Image.fromarray(_grey_levels(pixels))
    scale = MAX_SIDE / max(grey.size)
    if scale < 1:
        grey = grey.resize((round(grey.width * scale), round(grey.height * scale)),
                           Image.Resampling.LANCZOS)
    picture = grey.convert("RGB")
    if cam is not None:
        levels = _heat_levels(cam, grey.size)
        opacity = levels.point(OPACITY_LUT.tolist())
        levels.putpalette(HEAT_LUT.tobytes())  # now a palette image: level -> colour
        picture.paste(levels.convert("RGB"), (0, 0), opacity)
    _burn_in(picture, lines)
    return np.asarray(picture)


def _grey_levels(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] -> 0..255, rounded half up, computed in place on one float32 copy."""
    scaled = np.multiply(pixels, np.float32(255), dtype=np.float32)
    scaled += np.float32(0.5)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def _heat_levels(cam: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Positive evidence scaled to [0, 1] by its maximum, resized bilinearly to `size` (w, h),
    as levels 0..255 (rounded half up), every full-size step in Pillow."""
    positive = np.clip(np.asarray(cam, dtype=np.float32), 0, None)
    peak = float(positive.max()) if positive.size else 0.0
    if peak <= 0:
        return Image.new("L", size, 0)
    resized = Image.fromarray(positive / peak).resize(size, Image.Resampling.BILINEAR)
    # F -> L clips to 0..255 and truncates, so adding a half rounds half up.
    return resized.point(lambda level: level * 255 + 0.5).convert("L")


def _burn_in(picture: Image.Image, lines: list[str]) -> None:
    """White text on a dark band in the top-left corner, sized to the picture."""
    size = max(12, picture.height // 45)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(picture, "RGBA")
    margin = size // 2
    boxes = [draw.textbbox((0, 0), line, font=font) for line in lines]
    line_height = round(size * 1.3)
    width = max(box[2] for box in boxes) + 2 * margin
    draw.rectangle((0, 0, width, line_height * len(lines) + 2 * margin), fill=(0, 0, 0, 170))
    for row, line in enumerate(lines):
        draw.text((margin, margin + row * line_height), line, font=font, fill=(255, 255, 255, 255))
