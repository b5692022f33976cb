"""A shard's approximate-index handles for the view it ranks with, one per collaborative share.

The publisher builds the indexes with a base view when the catalog is large enough to be
ranked through them (:meth:`actors.catalog_view_builder.CatalogViewBuilder.compact`): their
presence in the view is the one decision, made once. Here each index is wrapped with the
view's popular and per-tag rows (:class:`portrait.ranking.AnnCatalog`) once per view key;
a view that differs only in popularity keeps the wrapped index.
"""

from __future__ import annotations

import faiss

from actors.catalog_view import TEXT_SPACE, CatalogView, ViewKey
from portrait.ann import AnnSettings, VectorIndex
from portrait.ranking import AnnCatalog

# The view carries indexes only where they serve: rank through them whatever the size.
_THROUGH_INDEX = AnnSettings(force=True)


def space_of(alpha: float) -> str | float:
    """The index key of the space a variant with collaborative share ``alpha`` ranks in."""
    return alpha if alpha > 0 else TEXT_SPACE


class ViewIndexes:
    """The approximate indexes of the current view, wrapped for ranking, by share."""

    def __init__(self) -> None:
        self._cached: dict[float, tuple[ViewKey, AnnCatalog | None]] = {}
        # A shard is one core's worth of work: faiss's own threads would only contend with
        # the other shards and the ingress on the node.
        faiss.omp_set_num_threads(1)

    def catalog(self, view: CatalogView, alpha: float) -> AnnCatalog | None:
        """The index of the space ``alpha`` ranks in, with ``view``'s popular and per-tag
        rows; None when the view has none (the catalog is scanned)."""
        cached = self._cached.get(alpha)
        if cached is not None and cached[0] == view.key:
            return cached[1]
        index = view.vector_index(space_of(alpha))
        ann: AnnCatalog | None = None
        if index is not None:
            if (cached is not None and cached[1] is not None and cached[0][:2] == view.key[:2]
                    and cached[1].index is index):
                ann = cached[1].with_popularity(view.popularity)
            else:
                ann = AnnCatalog(index, view.tags, view.popularity, _THROUGH_INDEX)
        self._cached[alpha] = (view.key, ann)
        return ann

    @staticmethod
    def text(view: CatalogView) -> VectorIndex | None:
        """The index of the rows' text parts (the text-only space's rows are unit)."""
        return view.vector_index(TEXT_SPACE)
