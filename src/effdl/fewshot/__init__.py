"""Few-shot learning: meta-learners (ProtoNet, R2-D2, ANIL) on the Conv-4 backbone, episodic training in the one
training loop, evaluation over many held-out episodes with 95% confidence intervals, augmentation for meta-learning
(Meta-MaxUp), feature clustering, and self-supervised pre-training as meta-learning (contrastive episodes). The
embedded data is :func:`effdl.data.load_glyphs` (Omniglot-like glyphs rendered from matplotlib's fonts); episodes
come from :class:`effdl.data.EpisodeSampler`, which works with any labelled dataset."""

from effdl.fewshot.augment import AUGMENTATIONS, AugmentConfig, AugmentedEpisodes, maxup_loss
from effdl.fewshot.clustering import (
    ClassicalConfig,
    ClusteringRegularizer,
    clustering_ratio,
    embed,
    train_classical,
)
from effdl.fewshot.contrastive import (
    CONTRASTIVE_HEADS,
    ContrastiveConfig,
    ContrastiveEpisodes,
    ContrastiveLearner,
    linear_probe,
    pretrain_contrastive,
    random_views,
)
from effdl.fewshot.learner import (
    HEADS,
    ANILHead,
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
    "CONTRASTIVE_HEADS",
    "HEADS",
    "ANILHead",
    "AugmentConfig",
    "AugmentedEpisodes",
    "ClassicalConfig",
    "ClusteringRegularizer",
    "ContrastiveConfig",
    "ContrastiveEpisodes",
    "ContrastiveLearner",
    "EpisodeScore",
    "FewShotConfig",
    "MetaLearner",
    "R2D2Head",
    "clustering_ratio",
    "conv4",
    "embed",
    "evaluate_episodes",
    "linear_probe",
    "load_meta_learner",
    "maxup_loss",
    "pretrain_contrastive",
    "prototype_logits",
    "random_views",
    "save_meta_learner",
    "train_classical",
    "train_meta_learner",
]
