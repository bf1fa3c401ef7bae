"""Every node's `/metrics` as one Prometheus text, each series labelled with its `node`.

Pure (no Ray): the ingress fetches the texts, this merges them. Each node renders its
metrics with prometheus_client, so parsing with its parser and rendering with its
`generate_latest` round-trips the names (`_total`, `_created`, histogram suffixes). A family
that several nodes have gets its HELP and TYPE once, with every node's samples under it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

NODE_LABEL = "node"


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merge_metrics(texts: Sequence[tuple[str, str]]) -> bytes:
    """`(node, Prometheus text)` pairs as one text; a node whose text does not parse is
    left out (the others still count), as a node that does not answer is."""
    merged: dict[str, Metric] = {}
    for node, text in texts:
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError:
            continue
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type)
            into.samples.extend(_labelled(family.samples, node))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merged[name] for name in sorted(merged)))
    return generate_latest(registry)


def _labelled(samples: Iterable[Sample], node: str) -> Iterator[Sample]:
    for sample in samples:
        # A series that already has a `node` label (none of ours do) keeps it as `node_`.
        labels = {("node_" if k == NODE_LABEL else k): v for k, v in sample.labels.items()}
        yield sample._replace(labels={NODE_LABEL: node, **labels})
