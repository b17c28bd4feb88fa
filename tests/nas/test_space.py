import pytest
import torch

from effdl.core.errors import ConfigError, UnknownNameError
from effdl.measure import count_macs
from effdl.nas import Architecture, get_space


@pytest.mark.parametrize("name", ["mnist1d_cnn", "digits_cnn"])
def test_samples_are_valid_buildable_and_seeded(name):
    space = get_space(name)
    a = [space.sample(torch.Generator().manual_seed(3)) for _ in range(2)]
    assert a[0] == a[1]
    g = torch.Generator().manual_seed(0)
    codes = set()
    for _ in range(20):
        arch = space.sample(g)
        assert space.contains(arch) and Architecture.decode(arch.encode()) == arch
        out = space.build(arch)(torch.zeros(2, *space.input_shape))
        assert out.shape == (2, space.num_classes)
        codes.add(arch.encode())
    assert len(codes) > 10


def test_mutation_changes_one_thing_and_stays_in_the_space():
    space = get_space("mnist1d_cnn")
    g = torch.Generator().manual_seed(1)
    arch = space.sample(g)
    for _ in range(30):
        child = space.mutate(arch, g)
        assert child != arch and space.contains(child)
        arch = child


def test_residual_changes_the_network_and_macs_follow_the_widths():
    space = get_space("mnist1d_cnn")
    x = torch.zeros(1, 1, 40)
    plain, res = space.build("c16-16_k3-3_s1-1_r0"), space.build("c16-16_k3-3_s1-1_r1")
    assert count_macs(res, x) >= count_macs(plain, x)
    assert count_macs(space.build("c32-32_k3-3_s1-1_r0"), x) > count_macs(plain, x)


def test_bad_input():
    with pytest.raises(ConfigError, match="cannot parse"):
        Architecture.decode("resnet50")
    with pytest.raises(ConfigError, match="one channel count"):
        Architecture((8, 8), (3,), (1, 1), False)
    with pytest.raises(UnknownNameError, match="valid search spaces"):
        get_space("nasbench201")
