"""Reference models behind a registry; together they hold every structure a compression tool must handle:
plain MLP and CNN stacks, Flatten -> Linear, residual adds with projection shortcuts (ResNet 1D/2D), deep BN
stacks (VGG), depthwise convs and inverted residuals (MobileNetV2), channel concatenation (DenseNet), and
multi-head attention with LayerNorm (ViT), and a decoder-only language model (GPT). Each has a ``test_*``
variant for fast tests.

Example:
    >>> from effdl.models import create_model
    >>> sum(p.numel() for p in create_model("cnn1d").parameters())
    23402
"""

from effdl.models import cnn, densenet, gpt, mlp, mobilenet, resnet, vgg, vit  # noqa: F401  (registers the models)
from effdl.models.base import (
    MODELS,
    InputCheck,
    create_model,
    example_batch,
    expect_inputs,
    list_models,
    model_spec,
    register_model,
)
from effdl.models.checkpoint import checkpoint_structure, load_model, save_model, structure_records
from effdl.models.cnn import ConvNet
from effdl.models.densenet import DenseNet
from effdl.models.gpt import GPT
from effdl.models.mlp import MLP
from effdl.models.mobilenet import MobileNetV2
from effdl.models.resnet import ResNet
from effdl.models.structure import (
    StructureKind,
    describe_structure,
    register_structure,
    restore_structure_,
    structure_kinds,
)
from effdl.models.vgg import VGG
from effdl.models.vit import Attention, VisionTransformer

__all__ = [
    "GPT",
    "MLP",
    "MODELS",
    "VGG",
    "Attention",
    "ConvNet",
    "DenseNet",
    "InputCheck",
    "MobileNetV2",
    "ResNet",
    "StructureKind",
    "VisionTransformer",
    "checkpoint_structure",
    "create_model",
    "describe_structure",
    "example_batch",
    "expect_inputs",
    "list_models",
    "load_model",
    "model_spec",
    "register_model",
    "register_structure",
    "restore_structure_",
    "save_model",
    "structure_kinds",
    "structure_records",
]
