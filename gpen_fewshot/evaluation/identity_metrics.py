"""Identity preservation: dlib distances of restored faces to their ground truth and to the person.

Per restored crop (all from ``gpen_fewshot.faces.identity``; distance is the primary number, lower = closer):
- ``id_distance_gt`` / ``id_similarity_gt``: to the embedding of the ground-truth crop;
- ``id_verified_gt``: 1 if that distance is below the same-person threshold (0.6), else 0;
- ``id_distance_ref`` / ``id_similarity_ref`` / ``id_verified_ref``: the same against the person's reference
  embedding, the mean of the embeddings of their training photos (``person_reference``). Averaged over
  crops, ``id_verified_ref`` is the fraction of restored faces still recognised as the person.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from gpen_fewshot.evaluation.values import Unavailable
from gpen_fewshot.faces.identity import (
    EMBEDDING_DIM,
    SAME_PERSON_THRESHOLD,
    IdentityEmbedder,
    distances,
    mean_embedding,
    similarity_from_distance,
)
from gpen_fewshot.faces.identity_net import IdentityEncoder, load_identity_network
from gpen_fewshot.utils.image import image_to_tensor

GT_KEYS = ("id_distance_gt", "id_similarity_gt", "id_verified_gt")
REF_KEYS = ("id_distance_ref", "id_similarity_ref", "id_verified_ref")


def person_reference(crops: Sequence[np.ndarray], embedder: IdentityEmbedder | None = None) -> np.ndarray:
    """A person's reference embedding from their aligned training crops (uint8 RGB): float32 (128,)."""
    if len(crops) == 0:
        raise ValueError("person_reference needs at least one crop")
    return mean_embedding((embedder or IdentityEmbedder()).embed_many(crops))


def identity_scores(
    restored: np.ndarray,
    gt: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    threshold: float = SAME_PERSON_THRESHOLD,
) -> dict[str, np.ndarray]:
    """Per-image identity scores from embeddings.

    Args:
        restored: (N, 128) embeddings of restored crops.
        gt: (N, 128) embeddings of the matching ground-truth crops, or None.
        reference: (128,) reference embedding of the person, or None.
        threshold: same-person distance threshold.

    Returns:
        float64 (N,) arrays under ``GT_KEYS`` (if ``gt``) and ``REF_KEYS`` (if ``reference``).
    """
    restored = np.asarray(restored, dtype=np.float64).reshape(-1, EMBEDDING_DIM)
    out: dict[str, np.ndarray] = {}
    for keys, target in ((GT_KEYS, gt), (REF_KEYS, reference)):
        if target is None:
            continue
        target = np.asarray(target, dtype=np.float64)
        if target.shape[-1] != EMBEDDING_DIM or (target.ndim == 2 and len(target) != len(restored)):
            raise ValueError(f"embeddings of shape {target.shape} do not match {len(restored)} restored ones")
        dist = distances(restored, target) if len(restored) else np.zeros(0)
        out[keys[0]] = dist
        out[keys[1]] = np.asarray(similarity_from_distance(dist), dtype=np.float64)
        out[keys[2]] = (dist < threshold).astype(np.float64)
    return out


class IdentityScorer:
    """Embeds crops and scores them; ground-truth embeddings are cached (validation sees the same GT often).

    Args:
        embedder: the dlib embedder (default: a new ``IdentityEmbedder()`` for GPEN-template crops).
        threshold: same-person distance threshold.
        cache_size: how many ground-truth embeddings to keep (keyed by the image's bytes).
    """

    def __init__(
        self,
        embedder: IdentityEmbedder | None = None,
        threshold: float = SAME_PERSON_THRESHOLD,
        cache_size: int = 4096,
    ) -> None:
        self.embedder = embedder or IdentityEmbedder()
        self.threshold = float(threshold)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._reason: str | None = None

    def unavailable_reason(self) -> str | None:
        """Why embeddings cannot be computed (dlib or its models missing), or None."""
        if self._reason is None:
            try:
                self.embedder.load()
            except ImportError as err:
                self._reason = f"identity: {err}"
            else:
                self._reason = ""
        return self._reason or None

    def _embed_gt(self, image: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(repr(image.shape).encode() + image.tobytes()).digest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        vector = self.embedder.embed(image)
        self._cache[key] = vector
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return vector

    def score(
        self,
        restored: Sequence[np.ndarray],
        gt: Sequence[np.ndarray] | None = None,
        reference: np.ndarray | None = None,
    ) -> dict[str, np.ndarray] | Unavailable:
        """Per-image scores (see ``identity_scores``) of aligned uint8 RGB crops, or ``Unavailable``."""
        reason = self.unavailable_reason()
        if reason:
            return Unavailable(reason)
        if gt is not None and len(gt) != len(restored):
            raise ValueError(f"got {len(restored)} restored crops but {len(gt)} ground-truth crops")
        restored_emb = self.embedder.embed_many(restored)
        gt_emb = np.stack([self._embed_gt(image) for image in gt]) if gt is not None and len(gt) else None
        if gt is not None and gt_emb is None:
            gt_emb = np.zeros((0, EMBEDDING_DIM), np.float32)
        return identity_scores(restored_emb, gt_emb, reference, self.threshold)


# MobileFaceNet (ArcFace family) identity, a second network beside dlib: cosine similarity, and "verified"
# when it exceeds MFN_SAME_PERSON_COSINE (the best LFW threshold of the RGB port, scripts/verify_identity.py).
MFN_GT_KEYS = ("mfn_similarity_gt", "mfn_verified_gt")
MFN_REF_KEYS = ("mfn_similarity_ref", "mfn_verified_ref")
MFN_SAME_PERSON_COSINE = 0.30


class MobileFaceNetScorer:
    """Cosine identity scores of aligned crops by the bundled MobileFaceNet (loaded on first use).

    Args:
        template: alignment template of the crops ("gpen" or "ffhq").
        threshold: cosine above which two faces count as the same person.
    """

    def __init__(self, template: str = "gpen", threshold: float = MFN_SAME_PERSON_COSINE) -> None:
        self.template, self.threshold = template, float(threshold)
        self._encoder = None

    def embed(self, images: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
        """(N, 128) float64 unit embeddings of uint8 RGB (S, S, 3) aligned crops."""
        import torch


        if self._encoder is None:
            self._encoder = IdentityEncoder(load_identity_network("mobilefacenet"), "mobilefacenet",
                                            self.template)
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                chunk = torch.stack([image_to_tensor(im) for im in images[start:start + batch]])
                out.append(self._encoder(chunk).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 128))

    def reference(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """A person's MobileFaceNet reference: the normalised mean embedding of their training crops."""
        mean = self.embed(crops).mean(0)
        return mean / max(np.linalg.norm(mean), 1e-12)

    def score(self, restored: Sequence[np.ndarray], gt: Sequence[np.ndarray] | None = None,
              reference: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """float64 (N,) arrays under ``MFN_GT_KEYS`` (if ``gt``) and ``MFN_REF_KEYS`` (if ``reference``)."""
        emb = self.embed(restored)
        out: dict[str, np.ndarray] = {}
        targets = ((MFN_GT_KEYS, self.embed(gt) if gt is not None else None), (MFN_REF_KEYS, reference))
        for keys, target in targets:
            if target is None:
                continue
            cos = (emb * np.asarray(target, np.float64)).sum(-1)
            out[keys[0]], out[keys[1]] = cos, (cos > self.threshold).astype(np.float64)
        return out
