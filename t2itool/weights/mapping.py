"""Name tables as data, applied and checked both ways: every official entry lands on exactly one t2itool entry
of equal shape (or is an entry the official forward never uses, listed as such), and every t2itool parameter and
buffer is filled. The first violation becomes one T2IError line naming the key.

A table row is (official pattern, our network, our pattern); `{i}` in a pattern stands for an index, `{i+1}` in our
pattern for the next one. A name matches a row when it equals the pattern or extends it by `.rest`; our name is our
pattern with the same indices, plus `.rest`. The first matching row wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from t2itool.errors import T2IError

Row = tuple[str, str, str]
_PLACEHOLDER = re.compile(r"\{(\w+)(?:\+(\d+))?\}")
# Written by BatchNorm since PyTorch 0.4.1: files saved before lack it, and it does not affect outputs in eval mode.
OPTIONAL_SUFFIX = "num_batches_tracked"


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts, position = [], 0
    for found in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[position : found.start()]))
        parts.append(rf"(?P<{found.group(1)}>\d+)")
        position = found.end()
    parts.append(re.escape(pattern[position:]))
    return re.compile("^" + "".join(parts) + r"(?P<_rest>\..+)?$")


def _fill(pattern: str, indices: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: str(int(indices[m.group(1)]) + int(m.group(2) or 0)), pattern)


@dataclass(frozen=True)
class Table:
    """A compiled name table of one official network; `unused_when_square` lists official patterns of 1x1 convs the
    official forward skips when their input and output widths are equal (dropped exactly then, when ours has none)."""

    rows: tuple[Row, ...]
    unused_when_square: tuple[str, ...] = ()

    def rename(self, name: str) -> tuple[str, str] | None:
        """(our network, our name) for an official name, or None when no row matches."""
        for regex, network, ours in _compiled(self.rows):
            found = regex.match(name)
            if found:
                indices = {k: v for k, v in found.groupdict().items() if k != "_rest"}
                return network, _fill(ours, indices) + (found.group("_rest") or "")
        return None

    def networks(self) -> list[str]:
        return list(dict.fromkeys(network for _, network, _ in self.rows))

    def unused_if_square(self, name: str, state: Mapping[str, torch.Tensor]) -> bool:
        for pattern in self.unused_when_square:
            found = _pattern_regex(pattern).match(name)
            if found:
                weight = state.get(name[: len(name) - len(found.group("_rest") or "")] + ".weight")
                return weight is not None and weight.dim() == 4 and weight.shape[0] == weight.shape[1]
        return False


@lru_cache(maxsize=64)
def _compiled(rows: tuple[Row, ...]) -> list[tuple[re.Pattern[str], str, str]]:
    return [(_pattern_regex(official), network, ours) for official, network, ours in rows]


def prefix_rows(pairs: Iterable[tuple[str, str]], network: str) -> tuple[Row, ...]:
    """Rows from (official prefix, our prefix) pairs as in t2itool/models/attngan/official_names.py, or from
    (official module, our module) as in stackgan's: both map a leading path and keep the rest."""
    return tuple((official.rstrip("."), network, ours.rstrip(".")) for official, ours in pairs)


def map_networks(
    official: Mapping[str, Mapping[str, torch.Tensor]],
    tables: Mapping[str, Table],
    targets: Mapping[str, Mapping[str, torch.Tensor]],
    where: str,
    fill: Sequence[str] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Rename official state dicts ({official network: state}) into ours ({our network: state}) through `tables`
    (keyed like `official`), checked against `targets` (our networks' state dicts): names, shapes, each entry
    once. `fill` names our networks that must come out complete (default: every network the tables reach)."""
    mapped: dict[str, dict[str, torch.Tensor]] = {}
    source: dict[tuple[str, str], str] = {}
    for label, state in official.items():
        table = tables[label]
        for name, value in state.items():
            shown = f"{where}: {label} entry {name}"
            renamed = table.rename(name)
            if renamed is None:
                raise T2IError(f"{shown}: not in the official layout this importer knows (wrong model or file?)")
            network, ours = renamed
            target_state = targets.get(network)
            if target_state is None:
                raise T2IError(f"{shown}: maps to network {network!r}, which this import does not build")
            if ours not in target_state:
                if table.unused_if_square(name, state):
                    continue  # built but never used by the official forward (identity shortcut)
                raise T2IError(f"{shown}: maps to {network}.{ours}, which t2itool's network does not have")
            expected = target_state[ours]
            if tuple(value.shape) != tuple(expected.shape):
                raise T2IError(
                    f"{shown} has shape {tuple(value.shape)}, t2itool's {network}.{ours} has {tuple(expected.shape)} "
                    "(a different size or width than the config)"
                )
            if (network, ours) in source:
                raise T2IError(f"{shown}: maps to {network}.{ours}, which {source[network, ours]} already fills")
            source[network, ours] = f"{label} entry {name}"
            mapped.setdefault(network, {})[ours] = value.detach().to(expected.dtype).clone()
    networks = list(fill) if fill is not None else list(dict.fromkeys(n for t in tables.values() for n in t.networks()))
    for network in networks:
        filled = mapped.setdefault(network, {})
        for ours, expected in targets[network].items():
            if ours in filled:
                continue
            if ours.rsplit(".", 1)[-1] == OPTIONAL_SUFFIX:
                filled[ours] = torch.zeros_like(expected)
                continue
            raise T2IError(f"{where}: nothing in the file fills t2itool's {network}.{ours} (missing official entry)")
    return {network: mapped[network] for network in networks}
