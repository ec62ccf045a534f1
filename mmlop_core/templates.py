"""Prompt templates.

`IMAGENET_TEMPLATES` is the 80-prompt list of the CLIP paper's ImageNet notebook trimmed to the
60 that PromptSRC (Khattak et al., ICCV 2023, `configs/.../imagenet_templates`) uses for its
frozen text-feature ensemble; docs/METHOD.md section 3 averages t0 over these plus the dataset template.
"""
from __future__ import annotations

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.",
    "a bright photo of the {}.", "a cropped photo of a {}.", "a plastic {}.",
    "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.",
    "art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
    "itap of the {}.",
)


def ensemble_templates(dataset_template: str, use_ensemble: bool) -> list[str]:
    """Templates whose frozen text features are averaged into t0 (docs/METHOD.md section 3).

    Returns `[dataset_template]` alone when `use_ensemble` is False, else the 60 ImageNet
    templates plus the dataset template (without duplicates, order kept).
    """
    if not use_ensemble:
        return [dataset_template]
    return list(dict.fromkeys((*IMAGENET_TEMPLATES, dataset_template)))
