"""Embedded datasets (MNIST-1D, digits, Python source text for language models) and local-file loaders
(MNIST, Fashion-MNIST, CIFAR-10) behind a registry.

Example:
    >>> from effdl.data import get_dataset
    >>> get_dataset("mnist1d").describe()
    'mnist1d: 4000 train / 1000 test examples of shape (1, 40), 10 classes'
"""

from effdl.data import cifar, digits, mnist, mnist1d, text  # noqa: F401  (registers the loaders)
from effdl.data.base import DATASETS, DatasetSplits, cache_dir, dataset_fingerprint, get_dataset, list_datasets
from effdl.data.cifar import load_cifar10
from effdl.data.digits import load_digits
from effdl.data.episodes import Episode, EpisodeDataset, EpisodeSampler
from effdl.data.glyphs import Glyphs, GlyphSplit, load_glyphs
from effdl.data.loaders import EpochSampler, calibration_subset, make_loader, split_validation
from effdl.data.mnist import load_fashion_mnist, load_mnist, read_idx
from effdl.data.mnist1d import load_mnist1d
from effdl.data.scenes import SCENE_TASKS, SceneDataset, Scenes, SceneSplit, load_scenes, render_scenes
from effdl.data.text import decode_bytes, encode_bytes, load_pysource

__all__ = [
    "DATASETS",
    "SCENE_TASKS",
    "DatasetSplits",
    "Episode",
    "EpisodeDataset",
    "EpisodeSampler",
    "EpochSampler",
    "GlyphSplit",
    "Glyphs",
    "SceneDataset",
    "SceneSplit",
    "Scenes",
    "cache_dir",
    "calibration_subset",
    "dataset_fingerprint",
    "decode_bytes",
    "encode_bytes",
    "get_dataset",
    "list_datasets",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_glyphs",
    "load_mnist",
    "load_mnist1d",
    "load_pysource",
    "load_scenes",
    "make_loader",
    "read_idx",
    "render_scenes",
    "split_validation",
]
