"""Image extraction shared by the PDF and DOCX readers: :class:`_ImageWriter`
decodes an image, saves it as ``<digest>.png`` named by a hash of its source
data (written then renamed, so concurrent workers sharing an output_dir never
see half a file), and returns its image block; it skips images smaller than
``MIN_IMAGE_SIDE`` on a side, repeats within a document, those past
``MAX_IMAGES_PER_DOCUMENT``, and any that Pillow cannot decode."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Set

import pypdfium2 as pdfium
from PIL import Image

from .blocks import Block

MAX_IMAGES_PER_DOCUMENT = 20
MIN_IMAGE_SIDE = 32

logger = logging.getLogger(__name__)

_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}


class _ImageWriter:
    """Writes a document's images as content-addressed PNGs and returns their
    image blocks; skips tiny, repeated and over-the-cap images."""

    def __init__(self, image_dir: Optional[Path]):
        self.image_dir = image_dir
        self.digests_taken: Set[str] = set()

    def wants(self, width: int, height: int) -> bool:
        return (
            self.image_dir is not None
            and len(self.digests_taken) < MAX_IMAGES_PER_DOCUMENT
            and min(width, height) >= MIN_IMAGE_SIDE
        )

    def write(self, source: bytes, load: Callable[[], Image.Image], page_idx: int) -> Optional[Block]:
        """Decode (via ``load``) and save the image whose encoded data is ``source``."""
        digest = hashlib.sha256(source).hexdigest()[:20]
        if digest in self.digests_taken:
            return None
        target = self.image_dir / f"{digest}.png"
        if not target.exists():
            try:
                image = load()
                if image.mode not in _PNG_MODES:
                    image = image.convert("RGB")
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
            except (OSError, ValueError, Image.DecompressionBombError, pdfium.PdfiumError) as exc:
                logger.debug("skipping undecodable image %s: %s", digest, exc)
                return None
            self.image_dir.mkdir(parents=True, exist_ok=True)
            # Write-then-rename, so a concurrent worker never sees half a file.
            handle, temp_name = tempfile.mkstemp(dir=self.image_dir, suffix=".part")
            with os.fdopen(handle, "wb") as temp_file:
                temp_file.write(buffer.getvalue())
            os.replace(temp_name, target)
        self.digests_taken.add(digest)
        return {
            "type": "image",
            "img_path": str(target.resolve()),
            "image_caption": [],
            "image_footnote": [],
            "page_idx": page_idx,
        }
