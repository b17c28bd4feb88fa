"""Few-shot learning: meta-learners (ProtoNet, R2-D2) on the Conv-4 backbone, episodic training in the one
training loop, and evaluation over many held-out episodes with 95% confidence intervals. The embedded data is
:func:`effdl.data.load_glyphs` (Omniglot-like glyphs rendered from matplotlib's fonts); episodes come from
:class:`effdl.data.EpisodeSampler`, which works with any labelled dataset."""

from effdl.fewshot.augment import AUGMENTATIONS, AugmentConfig, AugmentedEpisodes, maxup_loss
from effdl.fewshot.clustering import (
    ClassicalConfig,
    ClusteringRegularizer,
    clustering_ratio,
    embed,
    train_classical,
)
from effdl.fewshot.learner import (
    HEADS,
    EpisodeScore,
    FewShotConfig,
    MetaLearner,
    R2D2Head,
    conv4,
    evaluate_episodes,
    load_meta_learner,
    prototype_logits,
    save_meta_learner,
    train_meta_learner,
)

__all__ = [
    "AUGMENTATIONS",
    "HEADS",
    "AugmentConfig",
    "AugmentedEpisodes",
    "ClassicalConfig",
    "ClusteringRegularizer",
    "EpisodeScore",
    "FewShotConfig",
    "MetaLearner",
    "R2D2Head",
    "clustering_ratio",
    "conv4",
    "embed",
    "evaluate_episodes",
    "load_meta_learner",
    "maxup_loss",
    "prototype_logits",
    "save_meta_learner",
    "train_classical",
    "train_meta_learner",
]
