"""Index samplers for the data loaders and `build_sampler`.

`RandomSampler` / `SequentialSampler` are torch's. The three batch-structured samplers below draw
the indices of the next epoch ahead of time, so `len(sampler)` is the exact number of indices the
next `iter()` yields (the loader's length is therefore exact too).

Randomness: given a `seed`, a sampler owns a private RNG (its batches do not depend on how much
randomness model code consumed); without one it uses the global `random` module / torch RNG, which
`set_random_seed` seeds. A sampler runs in the main process whatever the worker count. Before every epoch the
trainer re-seeds the private RNG from (SEED, epoch) (`RandomSampler.generator.manual_seed`,
`_PresampledSampler.reseed`), so a resumed run draws the same batches as an uninterrupted one.
"""

import random
from collections import defaultdict

import torch
from torch.utils.data.sampler import RandomSampler, Sampler, SequentialSampler

AVAI_SAMPLERS = [
    "RandomSampler",
    "SequentialSampler",
    "RandomDomainSampler",
    "SeqDomainSampler",
    "RandomClassSampler",
]


def _make_rng(seed):
    """A private `random.Random(seed)`, or the global `random` module when seed is None."""
    return random if seed is None else random.Random(seed)


def _group_indices(data_source, key):
    """Map `key(item)` -> list of indices into data_source, in first-seen order."""
    groups = defaultdict(list)
    for idx, item in enumerate(data_source):
        groups[key(item)].append(idx)
    return groups


class _PresampledSampler(Sampler):
    """Base class: draws one epoch of indices ahead so that `__len__` is exact."""

    def __init__(self):
        self._next_epoch = self._sample_epoch()

    def _sample_epoch(self):
        raise NotImplementedError(f"{type(self).__name__} must implement _sample_epoch()")

    def reseed(self, seed):
        """Restart the private RNG from `seed` and redraw the next epoch's indices from it."""
        self._rng = random.Random(seed)
        self._next_epoch = self._sample_epoch()

    def __iter__(self):
        indices = self._next_epoch
        self._next_epoch = self._sample_epoch()
        return iter(indices)

    def __len__(self):
        return len(self._next_epoch)


def _draw_domain_batches(domain_dict, domains_for_batch, n_img_per_domain, rng):
    """One epoch of indices: each batch takes ``n_img_per_domain`` unused images from every domain that
    ``domains_for_batch()`` names, until some domain has fewer images left than that."""
    remaining = {domain: list(idxs) for domain, idxs in domain_dict.items()}
    indices = []
    while all(len(idxs) >= n_img_per_domain for idxs in remaining.values()):
        for domain in domains_for_batch():
            picked = rng.sample(remaining[domain], n_img_per_domain)
            indices.extend(picked)
            picked = set(picked)
            remaining[domain] = [i for i in remaining[domain] if i not in picked]
    return indices


class RandomDomainSampler(_PresampledSampler):
    """Each batch holds `batch_size // n_domain` random images from each of `n_domain` randomly
    chosen domains. The epoch ends when a chosen domain has fewer images left than it needs.

    Args:
        data_source (list): list of Datum.
        batch_size (int): batch size.
        n_domain (int): domains per batch; <= 0 means all domains.
        seed (int, optional): seed of a private RNG.
    """

    def __init__(self, data_source, batch_size, n_domain, seed=None):
        self.domain_dict = _group_indices(data_source, lambda item: item.domain)
        self.domains = sorted(self.domain_dict)
        if n_domain is None or n_domain <= 0:
            n_domain = len(self.domains)
        if n_domain > len(self.domains):
            raise ValueError(
                f"RandomDomainSampler: n_domain={n_domain} but the data has only "
                f"{len(self.domains)} domains; lower DATALOADER.*.N_DOMAIN"
            )
        if batch_size % n_domain != 0:
            raise ValueError(
                f"RandomDomainSampler: batch_size={batch_size} is not divisible by "
                f"n_domain={n_domain}; make BATCH_SIZE a multiple of N_DOMAIN"
            )
        self.n_domain = n_domain
        self.n_img_per_domain = batch_size // n_domain
        self._rng = _make_rng(seed)
        super().__init__()

    def _sample_epoch(self):
        return _draw_domain_batches(self.domain_dict, lambda: self._rng.sample(self.domains, self.n_domain),
                                    self.n_img_per_domain, self._rng)


class SeqDomainSampler(_PresampledSampler):
    """Each batch holds `batch_size // n_domains` random images from every domain, domains in
    sorted order. The epoch ends when some domain has fewer images left than it needs.

    Args:
        data_source (list): list of Datum.
        batch_size (int): batch size.
        seed (int, optional): seed of a private RNG.
    """

    def __init__(self, data_source, batch_size, seed=None):
        self.domain_dict = _group_indices(data_source, lambda item: item.domain)
        self.domains = sorted(self.domain_dict)
        if batch_size % len(self.domains) != 0:
            raise ValueError(
                f"SeqDomainSampler: batch_size={batch_size} is not divisible by the number of "
                f"domains ({len(self.domains)}); make BATCH_SIZE a multiple of it"
            )
        self.n_img_per_domain = batch_size // len(self.domains)
        self._rng = _make_rng(seed)
        super().__init__()

    def _sample_epoch(self):
        return _draw_domain_batches(self.domain_dict, lambda: self.domains, self.n_img_per_domain, self._rng)


class RandomClassSampler(_PresampledSampler):
    """Each batch holds `n_ins` images from each of `batch_size // n_ins` random classes.

    A class with fewer than `n_ins` images is sampled with replacement up to `n_ins`.

    Args:
        data_source (list): list of Datum.
        batch_size (int): batch size.
        n_ins (int): instances per class in a batch.
        seed (int, optional): seed of a private RNG.
    """

    def __init__(self, data_source, batch_size, n_ins, seed=None):
        if n_ins <= 0 or batch_size < n_ins:
            raise ValueError(
                f"RandomClassSampler: need 0 < n_ins <= batch_size, got n_ins={n_ins}, "
                f"batch_size={batch_size}; adjust DATALOADER.*.N_INS or BATCH_SIZE"
            )
        self.index_dict = _group_indices(data_source, lambda item: item.label)
        self.labels = list(self.index_dict)
        self.n_ins = n_ins
        self.ncls_per_batch = batch_size // n_ins
        self._rng = _make_rng(seed)
        super().__init__()

    def _chunks_per_label(self):
        """Shuffle each class's indices and cut them into groups of n_ins (remainder dropped)."""
        chunks = {}
        for label in self.labels:
            idxs = list(self.index_dict[label])
            if len(idxs) < self.n_ins:
                idxs = self._rng.choices(idxs, k=self.n_ins)
            self._rng.shuffle(idxs)
            n_full = len(idxs) // self.n_ins
            chunks[label] = [idxs[i * self.n_ins : (i + 1) * self.n_ins] for i in range(n_full)]
        return chunks

    def _sample_epoch(self):
        chunks = self._chunks_per_label()
        avai_labels = list(self.labels)
        indices = []
        while len(avai_labels) >= self.ncls_per_batch:
            for label in self._rng.sample(avai_labels, self.ncls_per_batch):
                indices.extend(chunks[label].pop(0))
                if not chunks[label]:
                    avai_labels.remove(label)
        return indices


def build_sampler(
    sampler_type,
    cfg=None,
    data_source=None,
    batch_size=32,
    n_domain=0,
    n_ins=16,
    seed=None,
):
    """Build the index sampler named `sampler_type` (one of AVAI_SAMPLERS).

    `cfg` is accepted for signature compatibility with Dassl and not read. `seed` (optional)
    gives the sampler a private RNG so its order depends on the seed only.
    """
    if sampler_type == "RandomSampler":
        generator = None
        if seed is not None:
            generator = torch.Generator()
            generator.manual_seed(seed)
        return RandomSampler(data_source, generator=generator)
    if sampler_type == "SequentialSampler":
        return SequentialSampler(data_source)
    if sampler_type == "RandomDomainSampler":
        return RandomDomainSampler(data_source, batch_size, n_domain, seed=seed)
    if sampler_type == "SeqDomainSampler":
        return SeqDomainSampler(data_source, batch_size, seed=seed)
    if sampler_type == "RandomClassSampler":
        return RandomClassSampler(data_source, batch_size, n_ins, seed=seed)
    raise ValueError(f"Unknown sampler type: {sampler_type} (available: {AVAI_SAMPLERS})")
